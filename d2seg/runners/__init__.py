"""Runners: jobs that cross the layers below them (data, models, evaluation, drawing) for one
command: ``compare`` (methods side by side on a dataset), ``demo`` (train, evaluate and draw the
bundled demo), ``diagnostics`` (``d2seg doctor``'s checks) and ``visualize`` (a model's
predictions drawn beside a dataset's ground truth). Only the CLI imports them.
"""
