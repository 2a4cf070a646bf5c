"""ResNet-50 (v1.5) on ImageNet as in "The Lottery Ticket Hypothesis at Scale" (Frankle et al.), Section 4:
global batch 1024 (the paper: eight TPU cores), SGD with momentum 0.9 and weight decay 1e-4 (not on
batch-norm parameters), the learning rate warmed up linearly over the first 5 epochs and divided by
10 at epochs 30, 60 and 80, 90 epochs in all (Google's TPU ResNet-50 reference, which the paper
cites); iterative global magnitude pruning of 20% per level with late resetting to epoch 6 and early
turnaround at epoch 45 (the mask of the next level comes from the weights at epoch 45).

The paper says the rate is "warmed up to 4"; the reference it trains with uses 0.1 x batch / 256,
which is 0.4 at batch 1024 (Goyal et al.), and 4 diverges — so the peak here is 0.4.

    --config=configs/resnet50_imagenet.py            iterative, late reset epoch 6, turnaround epoch 45
    --config=configs/resnet50_imagenet.py:one_shot   one-shot pruning to 0.8^level, same resets (green line)
    --config=configs/resnet50_imagenet.py:no_rewind  iterative, reset to initialization (orange line)

Lengths are in epochs, converted to steps with the training-set size (1,281,167 images: 1251 steps
per epoch at batch 1024; 112,590 steps, rewind step 7506, turnaround step 56,295).

Prepare ImageNet once (the tar files must be in DIR/downloads/manual):
    tfds build imagenet2012 --file_format=array_record --data_dir=DIR
    python -m lth_jax.main --config=configs/resnet50_imagenet.py --workdir=... --config.dataset.data_dir=DIR
On a pod slice add --distributed=yes (see README, "Running on a TPU pod / Colab TPU").
"""

import ml_collections

from lth_jax.config import schema

VARIANTS = ('one_shot', 'no_rewind')


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  """The ResNet-50/ImageNet config; `variant` is '', 'one_shot' or 'no_rewind'."""
  config = schema.base_config()
  config.dataset.name = 'imagenet2012'  # always streamed: random-resized crop + flip; eval 256 -> 224
  config.model.name = 'resnet50'
  config.model.dtype = 'bfloat16'  # float32 parameters, bfloat16 computation (TPU/GPU)

  training = config.training
  training.optimizer = 'momentum'
  training.momentum = 0.9
  training.weight_decay = 1e-4
  training.weight_decay_batch_norm = False  # the reference decays every variable but batch norm's
  training.learning_rate = 0.4
  training.schedule = 'step'
  training.warmup_epochs = 5
  training.decay_epochs = (30, 60, 80)
  training.decay_factor = 0.1
  training.batch_size = 1024
  training.num_steps = 0
  training.num_epochs = 90
  training.eval_every = 0
  training.eval_every_epochs = 10
  training.eval_batch_size = 1024
  training.steps_per_dispatch = 1  # a ResNet-50 step dwarfs the dispatch; keeps host batches small

  pruning = config.pruning
  pruning.scope = 'global'
  pruning.mode = 'iterative'
  pruning.fraction = 0.2
  pruning.layer_fractions = {}
  pruning.levels = 10  # 0.8^10 = 10.7% of the weights remain (89% pruned)
  pruning.rewind_epoch = 6
  pruning.turnaround_epoch = 45
  config.branches = ('reinit',)

  # One run at a time over the whole mesh: a ResNet-50 at batch 1024 fills a pod by itself.
  config.parallel.members_per_program = 1
  config.checkpointing.every_steps = 1000  # about 0.8 epoch of work lost at most on preemption
  if variant == 'one_shot':
    pruning.mode = 'one_shot'  # level L prunes the epoch-45 weights to 0.8^L in one go
  elif variant == 'no_rewind':
    pruning.rewind_epoch = 0.0
  elif variant:
    raise ValueError(f'unknown variant {variant!r} of resnet50_imagenet.py (known: {", ".join(VARIANTS)})')
  return config
