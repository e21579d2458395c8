"""Analysis commands: report (the study report of a run), explain (attributions for any text), compare (runs)."""

from __future__ import annotations

import argparse

from sentiment_lab.analysis.explain import explain
from sentiment_lab.cli import command
from sentiment_lab.compare import compare_runs
from sentiment_lab.report import build_report
from sentiment_lab.tables import format_table


@command("report")
def _report(args: argparse.Namespace) -> int:

    a = build_report(
        args.run_dir,
        n_explanations=args.explanations,
        ig_steps=args.ig_steps,
        target_accuracy=args.target_accuracy,
        store_calibration=not args.no_store,
        label_noise=not args.no_label_noise,
    )
    m = a["metrics"]
    print(
        f"test accuracy {m['ci']['accuracy']['estimate']:.4f} "
        f"[{m['ci']['accuracy']['low']:.4f}, {m['ci']['accuracy']['high']:.4f}], "
        f"F1 {m['ci']['f1']['estimate']:.4f} [{m['ci']['f1']['low']:.4f}, {m['ci']['f1']['high']:.4f}] (95% bootstrap)"
    )
    k = a["confidence"].get("calibration")
    if k:
        t = k["test"]
        print(
            f"temperature {k['temperature']:.3f}: test ECE {100 * t['ece_before']:.2f} -> {100 * t['ece_after']:.2f} "
            f"points, NLL {t['nll_before']:.4f} -> {t['nll_after']:.4f}"
        )
        ab = k["abstention_test"]
        if ab["threshold"] is not None and ab["accuracy_kept"] is None:
            print(
                f"abstain below {100 * ab['threshold']:.1f}% confidence: no test review is that confident "
                "(coverage 0%); every review would go to human review"
            )
        elif ab["threshold"] is not None:
            print(
                f"abstain below {100 * ab['threshold']:.1f}% confidence: coverage {100 * ab['coverage']:.1f}%, "
                f"accuracy {100 * ab['accuracy_kept']:.1f}%, {100 * ab['to_review']:.1f}% to human review"
            )
        else:
            print(f"no threshold reaches {100 * k['target_accuracy']:.0f}% accuracy on validation")
    rows = [
        [
            r["label"],
            r["n"],
            r["errors"],
            r["error_rate"] if r["error_rate"] is not None else "-",
            f"{r['fisher_p']:.2g}" if r["fisher_p"] is not None else "-",
        ]
        for r in a["errors"]["tag_table"]
    ]
    print(format_table(rows, ["tag", "reviews", "errors", "error rate", "Fisher p"]))
    print(f"report: {args.run_dir}/report.html (analysis.json, figures/) in {a['seconds']['total']:.1f} s")
    return 0


@command("explain")
def _explain(args: argparse.Namespace) -> int:
    target = int(args.target) if args.target is not None and args.target.isdigit() else args.target
    result = explain(args.model, args.texts, args.out, args.ig_steps, target=target)
    for i, e in enumerate(result["explanations"], 1):
        top = ", ".join(f"{w} ({v:+.2f})" for w, v in e["top_tokens"]["for"][:5])
        print(f"text {i}: {e['pred_name']} ({100 * e['confidence']:.1f}%); strongest evidence: {top}")
    print(f"explanations: {result['out_dir']}/explanation.html")
    return 0


@command("compare")
def _compare(args: argparse.Namespace) -> int:

    c = compare_runs(args.run_dirs, args.out, alpha=args.alpha)
    rows = [
        [
            r["run"],
            f"{r['accuracy']['estimate']:.4f} [{r['accuracy']['low']:.4f}, {r['accuracy']['high']:.4f}]",
            f"{r['f1']['estimate']:.4f} [{r['f1']['low']:.4f}, {r['f1']['high']:.4f}]",
            f"{r['train_runtime_s']:.0f}" if r["train_runtime_s"] is not None else "-",
        ]
        for r in c["runs"]
    ]
    print(format_table(rows, ["run", "accuracy [95% CI]", "F1 [95% CI]", "train s"]))
    for p in c["pairs"]:
        test = p["mcnemar"]
        print(f"{p['a']} vs {p['b']}: McNemar p = {test['p_value']:.3g} (Holm {test['p_holm']:.3g}); {p['verdict']}")
    print(f"comparison: {c['out_dir']}/comparison.html (comparison.json)")
    return 0
