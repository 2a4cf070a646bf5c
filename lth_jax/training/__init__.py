"""Training one run, or a population of same-shaped runs, over a ('members', 'data') device mesh: the
TrainState and pure steps, the jit-compiled programs, the Trainer that runs them (evaluations,
snapshots, divergence checks), the feeds that bring batches, the mesh and shardings, orbax
checkpoints, preemption, and the per-member memory estimate."""

from lth_jax.training.checkpoints import CheckpointError
from lth_jax.training.checkpoints import restore_tree
from lth_jax.training.checkpoints import RunCheckpoints
from lth_jax.training.checkpoints import save_tree
from lth_jax.training.parallel import create_mesh
from lth_jax.training.parallel import initialize_distributed
from lth_jax.training.parallel import member_layout
from lth_jax.training.parallel import to_host
from lth_jax.training.preemption import StopRequest
from lth_jax.training.run_state import Preempted
from lth_jax.training.run_state import RunCheckpoint
from lth_jax.training.run_state import TrainResult
from lth_jax.training.steps import eval_step
from lth_jax.training.steps import member
from lth_jax.training.steps import stack_members
from lth_jax.training.steps import train_step
from lth_jax.training.steps import TrainState
from lth_jax.training.trainer import Trainer

__all__ = [
    'CheckpointError',
    'Preempted',
    'RunCheckpoint',
    'RunCheckpoints',
    'StopRequest',
    'TrainResult',
    'TrainState',
    'Trainer',
    'create_mesh',
    'eval_step',
    'initialize_distributed',
    'member',
    'member_layout',
    'restore_tree',
    'save_tree',
    'stack_members',
    'to_host',
    'train_step',
]
