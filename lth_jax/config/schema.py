"""Every config field lth_jax reads, with its default. Config files start from `base_config()`.

Lengths and points in training are given in steps (iterations) or, through the `*_epochs` twin of a
field, in epochs of the training set (fractions allowed); `lth_jax.config.resolve` converts
epochs to steps with the dataset size before anything runs (steps_per_epoch = num_train // batch).
Set one of each pair, not both.

    def get_config():
      config = lth_jax.config.base_config()
      config.model.name = 'conv4'
      ...
      return config
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """The full config with defaults: LeNet-300-100 on MNIST-1D, 20% iterative local pruning."""
  config = ml_collections.ConfigDict()
  config.seed = 0  # seeds initialization, batch order and branch randomness
  config.trials = 1  # independent repetitions (seeds derived from seed and trial)
  config.dataset = _dataset_section()
  config.model = _model_section()
  config.training = _training_section()
  config.pruning = _pruning_section()
  config.task = _task_section()
  # Controls trained beside the ticket at every level: reinit, permuted, permuted_reinit, random_pruning,
  # sign_reinit, and pruning at initialization: snip, grasp, synflow, magnitude_at_init, each also as
  # <name>_shuffled and <name>_reinit (see lth_jax/branches.py).
  config.branches = ('reinit',)
  config.parallel = _parallel_section()
  config.transfer = _transfer_section()
  config.report = _report_section()
  config.checkpointing = _checkpointing_section()
  # A sweep over this config: axes of values nested like the fields they set, e.g.
  # config.sweep = {'pruning': {'rewind_step': (0, 100, 500)}}; run by `lth_jax.sweep` and by
  # `python -m lth_jax.main` (whose --sweep=FIELD=V1,V2 flags name axes too). Empty: one search.
  config.sweep = ml_collections.ConfigDict()
  return config


def _dataset_section() -> ml_collections.ConfigDict:
  """The `dataset` section: which dataset, how it is read, and the sizes and splits of generated ones."""
  dataset = ml_collections.ConfigDict()
  # sum_of_two | digits | mnist1d | mnist | cifar10 | imagenet2012 | tfds:NAME (any tfds dataset, e.g.
  # tfds:fashion_mnist) | a name registered with lth_jax.data.register
  dataset.name = 'mnist1d'
  # Stream the data from tfds files through the grain pipeline (with augmentation for cifar10: random
  # crop with padding 4, horizontal flip) instead of loading it into memory; imagenet2012 always streams;
  # a tfds:NAME classification dataset streams without augmentation, its uint8 images scaled to [0, 1].
  dataset.streaming = False
  dataset.data_dir = ml_collections.config_dict.placeholder(str)  # tfds data_dir / dataset cache
  dataset.seed = 0  # generation / split seed of generated datasets
  dataset.num_train = ml_collections.config_dict.placeholder(int)  # first N examples (sum_of_two: size)
  dataset.num_test = ml_collections.config_dict.placeholder(int)
  dataset.train_range = (-1.0, 1.0)  # sum_of_two only
  dataset.test_range = (1.0, 2.0)  # sum_of_two only
  dataset.test_fraction = 0.2  # digits only
  # tfds:NAME datasets only: the splits that are the training and test sets (any tfds split, e.g.
  # 'train[:90%]'), and the features that hold the model's input and the target.
  dataset.train_split = 'train'
  dataset.test_split = 'test'
  dataset.input_key = 'image'
  dataset.target_key = 'label'
  return dataset


def _model_section() -> ml_collections.ConfigDict:
  """The `model` section: the architecture, its widths, and how it computes."""
  model = ml_collections.ConfigDict()
  # linear | lenet | conv2 | conv4 | conv6 | vgg11 | vgg16 | vgg19 | resnet20 | resnet56 | resnet18 | resnet50,
  # a name given to lth_jax.models.register, or an import path 'package.module:Name' of a flax module
  # class (built with model.arguments) or of a builder function `builder(model, num_outputs)`.
  model.name = 'lenet'
  model.arguments = ml_collections.ConfigDict()  # keyword arguments of an imported module class
  model.hidden_sizes = (300, 100)  # lenet
  model.hidden_size = 200  # linear
  model.dense_sizes = (256, 256)  # conv2/4/6
  model.dtype = 'float32'  # computation dtype: float32 | bfloat16 (params stay float32)
  # How convolution kernel gradients are computed: lax | patches (one matmul of input patches, several
  # times faster under XLA:CPU) | auto (patches on CPU, lax elsewhere). See lth_jax.models.convolution.
  model.conv_kernel_gradient = 'auto'
  return model


def _training_section() -> ml_collections.ConfigDict:
  """The `training` section: optimizer, schedule, batch, length and evaluation of every run."""
  training = ml_collections.ConfigDict()
  training.optimizer = 'adam'  # sgd | momentum | nesterov | adam | adamw
  training.learning_rate = 1.2e-3
  training.momentum = 0.9
  training.weight_decay = 0.0
  training.weight_decay_batch_norm = True  # False: batch-norm scales and offsets are not decayed
  training.schedule = 'constant'  # constant | step | cosine
  training.warmup_steps = 0  # linear warmup over these steps: rate * (t + 1) / W
  training.warmup_epochs = 0.0  # ... or over these epochs
  training.decay_boundaries = ()  # steps at which 'step' multiplies by decay_factor
  training.decay_epochs = ()  # ... or epochs
  training.decay_factor = 0.1
  training.batch_size = 64  # global batch (all devices of all hosts)
  training.num_steps = 3000  # length of training; or 0 and set num_epochs
  training.num_epochs = 0.0  # ... in epochs of the training set (fractions allowed)
  training.eval_every = 500  # test-set evaluation every this many steps (0: only at the end)
  training.eval_every_epochs = 0.0  # ... or epochs
  training.eval_batch_size = 1000
  training.steps_per_dispatch = 64  # steps fused into one compiled loop per dispatch
  return training


def _task_section() -> ml_collections.ConfigDict:
  """The `task` section: the loss trained on and the metrics reported (see lth_jax/tasks.py)."""
  task = ml_collections.ConfigDict()
  # '' : the dataset's (cross_entropy for classification, squared_error for regression); a built-in name;
  # or an import path 'package.module:function' of `loss(outputs, targets) -> scalar` (the batch mean).
  task.loss = ''
  # () : the dataset's (accuracy | rmse); else built-in names (accuracy, top_<k>_accuracy, rmse) or
  # import paths of lth_jax.tasks.Metric values. The first is the run's metric (curves, report, stars).
  task.metrics = ()
  return task


def _pruning_section() -> ml_collections.ConfigDict:
  """The `pruning` section: how much is pruned per level, where, and from which weights."""
  pruning = ml_collections.ConfigDict()
  pruning.mode = 'iterative'  # iterative | one_shot
  pruning.scope = 'local'  # local (per layer) | global (one pool)
  pruning.fraction = 0.2  # of the remaining weights, per level
  # Per-layer fractions: these layers are pruned on their own at their rate (with scope 'global' they
  # stay out of the pool).
  pruning.layer_fractions = ml_collections.ConfigDict({'output': 0.1})
  pruning.levels = 5  # pruning levels after the dense level 0
  pruning.target_density = ml_collections.config_dict.placeholder(float)  # stop when reached
  pruning.min_weights_per_layer = 0  # local pruning never goes below this per layer
  pruning.rewind_step = 0  # 0: reset to init; k > 0: late resetting to step k
  pruning.rewind_epoch = 0.0  # ... or to this epoch
  pruning.turnaround_step = 0  # early turnaround: prune from the weights at this step (0: end)
  pruning.turnaround_epoch = 0.0  # ... or at this epoch
  # 'step': turn around at turnaround_step (or epoch); 'early_bird' (You et al. 2020): at the first
  # evaluation where the mask pruning would cut has settled, i.e. the last early_bird_window distances
  # (normalized Hamming, one evaluation to the next; `mask_distance` in the curve) are below
  # early_bird_threshold. The ticket runs keep their weights at every evaluation until they finish.
  pruning.turnaround = 'step'
  pruning.early_bird_threshold = 0.1
  pruning.early_bird_window = 5
  pruning.prunable_parameters = ('kernel',)  # leaf names pruning may touch (flax Dense, Conv, Einsum, attention)
  # Or patterns over whole leaf paths ('*/kernel', 'Embed_0/embedding'; fnmatch, '*' crosses '/'); when
  # given, they decide instead of prunable_parameters. From Python, `lth_jax.run(..., prunable=rule)`.
  pruning.prunable_patterns = ()
  pruning.excluded_layers = ()  # layers never pruned (names, families or module paths)
  # What ranks the weights a level prunes (lowest first): 'magnitude' (|w|) | 'snip' (|g * w|, Lee et al.,
  # the mean gradient over snip_batches batches) | a name given to lth_jax.pruning.register
  pruning.criterion = 'magnitude'
  # 'unstructured' | 'N:M' (e.g. '2:4'): every prunable layer without a fraction of its own keeps the N
  # best of each M consecutive weights along its input dimension, reached at level 1 and kept (the layers
  # in layer_fractions go on being pruned unstructured at their rate). Training stays dense arithmetic.
  pruning.structure = 'unstructured'
  pruning.snip_batches = 1  # training batches the snip and grasp branches and the snip criterion score over
  # The pruning-at-init branches (snip, grasp, synflow, magnitude_at_init and their _shuffled and _reinit
  # ablations) keep as many weights as the level's ticket: 'global' in one pool (as the papers prune),
  # 'layerwise' the ticket's count in every layer.
  pruning.at_init_scope = 'global'
  pruning.synflow_rounds = 100  # SynFlow's rounds of iterative pruning (Tanaka et al.; 1: one shot)
  return pruning


def _parallel_section() -> ml_collections.ConfigDict:
  """The `parallel` section: the device mesh, runs per compiled program, and the batch per device."""
  parallel = ml_collections.ConfigDict()
  # Two mesh axes, ('members', 'data'): the runs of a program (a population) are split over 'members',
  # each run's batch over 'data'; one run alone is data parallel over every device (mesh 1 x N).
  parallel.num_devices = 0  # 0: every device of every host
  # Runs trained together as one vmapped program. Each lottery level's runs not yet recorded (level 0:
  # every trial's dense run; level L: trials x branches) form a cohort, split into programs of at most
  # this many members. 1: one run at a time (data parallel over all devices); 0 (auto): whole cohorts,
  # capped by an estimate of what fits in device memory. Results agree with one-run-at-a-time to float
  # rounding, not bitwise, so a change is a config change (see README, "Population search").
  parallel.members_per_program = 0
  parallel.batch_per_device = 0  # > 0: global batch = this x devices (then training.batch_size
  # must be 0 or that product)
  return parallel


def _transfer_section() -> ml_collections.ConfigDict:
  """The `transfer` section: an exported ticket to train, and how it starts."""
  # Train a ticket exported by `python -m lth_jax.tickets export` under this config (another seed,
  # optimizer, or dataset of the same input shape): level 0 trains it from step 0 as a run of its own,
  # and levels >= 1 prune it further. See README, "Tickets".
  transfer = ml_collections.ConfigDict()
  transfer.ticket = ml_collections.config_dict.placeholder(str)  # an exported ticket (.npz); None: off
  transfer.start = 'ticket'  # ticket: its own starting weights | reinit: fresh weights, same mask
  # When the output layer cannot transfer (another number of classes) it starts fresh and trains
  # dense | ticket_density (pruned at random to the ticket's output-layer density).
  transfer.output_layer = 'dense'
  return transfer


def _report_section() -> ml_collections.ConfigDict:
  """The `report` section: what a run prints."""
  report = ml_collections.ConfigDict()
  report.print_surviving_weights = False  # print the last level's surviving weights
  report.progress_every_seconds = 60.0  # a progress line at least this often between evaluations
  return report


def _checkpointing_section() -> ml_collections.ConfigDict:
  """The `checkpointing` section: periodic checkpoints and TensorBoard files."""
  # What a run writes to survive preemption and to be watched; never changes results, so a re-run
  # in the same workdir may change it (see README, "Resuming and preemption").
  checkpointing = ml_collections.ConfigDict()
  checkpointing.every_steps = 1000  # checkpoint the run in progress every this many steps (0: never)
  checkpointing.max_to_keep = 2  # periodic checkpoints kept per run (older ones are deleted)
  checkpointing.tensorboard = True  # also write the scalars as TensorBoard event files
  return checkpointing


def frankle_carbin_conv(
    model_name: str, learning_rate: float, num_steps: int, conv_rate: float, levels: int
) -> ml_collections.ConfigDict:
  """Conv-N on CIFAR-10 as Frankle & Carbin (2019) train it: Adam, batch 60, Gaussian Glorot init,
  local pruning at `conv_rate` for convolutions, 20% for dense layers, 10% for the output layer."""
  config = base_config()
  config.dataset.name = 'cifar10'
  config.model.name = model_name
  config.model.dense_sizes = (256, 256)
  config.training.optimizer = 'adam'
  config.training.learning_rate = learning_rate
  config.training.batch_size = 60
  config.training.num_steps = num_steps
  config.training.eval_every = 1000
  config.training.steps_per_dispatch = 16  # a ~1 s Conv step on CPU dwarfs a dispatch; a TPU step does not
  config.pruning.scope = 'local'
  config.pruning.fraction = 0.2
  config.pruning.layer_fractions = {'conv': conv_rate, 'output': 0.1}
  config.pruning.levels = levels
  config.pruning.rewind_step = 0
  config.branches = ('reinit',)
  return config


def frankle_carbin_sgd_cifar(
    model_name: str,
    batch_size: int,
    num_steps: int,
    decay_boundaries: tuple[int, ...],
    rewind_step: int,
    eval_every: int,
) -> ml_collections.ConfigDict:
  """A deep network on CIFAR-10 with Frankle & Carbin's standard hyperparameters: SGD with momentum
  0.9, learning rate 0.1 dropped 10x at `decay_boundaries`, weight decay 1e-4; iterative global
  magnitude pruning of 20% of the convolution weights per level (Frankle & Carbin prune the
  convolutional layers globally; the output layer is not pruned) with late resetting to
  `rewind_step`. The data is streamed with the standard augmentation (random crop with padding 4,
  horizontal flip)."""
  config = base_config()
  config.dataset.name = 'cifar10'
  config.dataset.streaming = True
  config.model.name = model_name
  config.training.optimizer = 'momentum'
  config.training.momentum = 0.9
  config.training.learning_rate = 0.1
  config.training.weight_decay = 1e-4
  config.training.schedule = 'step'
  config.training.decay_boundaries = decay_boundaries
  config.training.decay_factor = 0.1
  config.training.batch_size = batch_size
  config.training.num_steps = num_steps
  config.training.eval_every = eval_every
  config.training.steps_per_dispatch = 16  # 16 host batches per dispatch: small at CIFAR-10's size
  config.pruning.scope = 'global'
  config.pruning.fraction = 0.2
  config.pruning.layer_fractions = {}
  config.pruning.excluded_layers = ('output',)
  config.pruning.levels = 20
  config.pruning.rewind_step = rewind_step
  config.branches = ('reinit',)
  return config
