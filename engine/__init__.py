"""The engine behind the command lines: training, scoring, segmenting photos, and what they share.

    trainer, train_state, run_folder, distributed   training runs (fit, resume, DDP)
    scoring, segment_photos                          evaluate.py's reports, predict.py's folders
    inference, checkpoint                            a checkpoint's model on a device, batched scoring
    ridge_baseline, pictures, run_log                the classical baseline, overlays and curves, metrics.csv / W&B
    cli, errors, fileio, output_folder               one-line errors, atomic writes, what a command may write

Importing the package imports nothing else (config.py and data/ use engine.errors and engine.fileio).
"""
