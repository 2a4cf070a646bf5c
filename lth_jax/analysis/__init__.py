"""Analyses of tickets: stability of training to pruning (distance, angle and correlation to the full
network, trained in lockstep), linear mode connectivity, and the overlap of masks across trials and
levels."""

from lth_jax.analysis.connectivity import error_barrier
from lth_jax.analysis.connectivity import error_barrier_height
from lth_jax.analysis.connectivity import linear_mode_connectivity
from lth_jax.analysis.mask_overlap import chance_overlap
from lth_jax.analysis.mask_overlap import overlap
from lth_jax.analysis.metrics import stability_metrics
from lth_jax.analysis.stability import measure
from lth_jax.analysis.stability_results import load_results
from lth_jax.analysis.stability_results import STABILITY_FILE
from lth_jax.analysis.stability_results import StabilityResult
from lth_jax.analysis.ticket_stability import measure_lottery_ticket
from lth_jax.analysis.ticket_stability import measure_lottery_ticket_once

__all__ = [
    'STABILITY_FILE',
    'StabilityResult',
    'chance_overlap',
    'error_barrier',
    'error_barrier_height',
    'linear_mode_connectivity',
    'load_results',
    'measure',
    'measure_lottery_ticket',
    'measure_lottery_ticket_once',
    'overlap',
    'stability_metrics',
]
