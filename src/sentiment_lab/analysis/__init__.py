"""Understanding a trained model: calibration (`calibration`), error tags and label noise (`errors`),
token attributions and attention (`explain`). The HTML report (`sentiment_lab.report`) assembles them.
"""
