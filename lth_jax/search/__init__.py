"""The lottery search: `run(config, workdir)` trains level 0 densely, then prunes, resets and retrains
level after level with the control branches beside each ticket; each level's runs train together in populations (`lth_jax.search.loop`, for which a run is a sweep of one search);
the workdir holds the lock, the recorded config, the results file and the checkpoints to resume from.
`sweep(config, axes, workdir)` runs the variants of a config as one search: variants that share their
dense training share its run."""

from lth_jax.search.custom import CustomParts
from lth_jax.search.experiment import Experiment
from lth_jax.search.experiment import prepare
from lth_jax.search.lottery import LotteryResults
from lth_jax.search.lottery import run
from lth_jax.search.sweeps import load as load_sweep
from lth_jax.search.sweeps import run as sweep
from lth_jax.search.sweeps import run_named as sweep_named
from lth_jax.search.sweeps import SweepResults
from lth_jax.search.trial import branch_seed
from lth_jax.search.trial import trial_seeds
from lth_jax.search.workdir import check_workdir_config
from lth_jax.search.workdir import level_directory
from lth_jax.search.workdir import workdir_lock

__all__ = [
    'CustomParts',
    'Experiment',
    'SweepResults',
    'LotteryResults',
    'branch_seed',
    'check_workdir_config',
    'level_directory',
    'load_sweep',
    'prepare',
    'run',
    'sweep',
    'sweep_named',
    'trial_seeds',
    'workdir_lock',
]
