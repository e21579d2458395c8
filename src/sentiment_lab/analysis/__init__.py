"""Understanding a trained model: calibration (`calibration`), error tags and label noise (`error_tags`),
token attributions and attention (`explain`). The HTML report (`sentiment_lab.report`) assembles them.
"""
