"""Reports of a lottery workdir: the numbers (records loaded, summaries per sparsity, training curves,
the CSV table), their plots, and the stability tables and figures against the late-reset step."""

from lth_jax.reporting.plots import plot_accuracy_vs_sparsity
from lth_jax.reporting.plots import plot_training_curves
from lth_jax.reporting.plots import write_report
from lth_jax.reporting.stability_tables import format_end_of_training
from lth_jax.reporting.stability_tables import format_over_training
from lth_jax.reporting.stability_tables import plot_stability_over_training
from lth_jax.reporting.stability_tables import plot_stability_vs_reset_step
from lth_jax.reporting.summaries import load
from lth_jax.reporting.summaries import sparsity_summary
from lth_jax.reporting.summaries import training_curves
from lth_jax.reporting.summaries import write_csv

__all__ = [
    'format_end_of_training',
    'format_over_training',
    'load',
    'plot_accuracy_vs_sparsity',
    'plot_stability_over_training',
    'plot_stability_vs_reset_step',
    'plot_training_curves',
    'sparsity_summary',
    'training_curves',
    'write_csv',
    'write_report',
]
