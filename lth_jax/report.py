"""The report command: a lottery run's tables, plots and CSV files from `WORKDIR/results.jsonl` (a
finished or a running experiment) and its level checkpoints.

Usage: python -m lth_jax.report --workdir=DIR [--output_dir=OUT]

    python -m lth_jax.report --workdir=/tmp/lth_default --output_dir=/tmp/lth_default_report

--workdir is required. Prints the table of all records, the sparsity table and (when the workdir holds
masks to compare) the mask overlap table, and writes into the output folder (default: the workdir):

  accuracy_vs_sparsity.png   test metric against percent of weights remaining, one line per branch,
                             mean over trials with min-max error bars, the dense network dashed
  training_curves.png        the ticket's test metric against step, one line per level
  sparsity_table.csv         level, fraction remaining, and per branch the mean/min/max over trials
  layer_density.csv          each prunable layer's kept fraction against the level, mean over trials
  layer_density.png          the same, plotted
  mask_overlap.csv           per level and layer, the share of one mask's survivors another keeps
                             (between trials, and between a trial's consecutive levels), against
                             chance; written when the workdir holds two masks to compare

The plots are PNGs at 150 dpi, titled with the model and dataset of WORKDIR/config.json and the
number of trials. For a sweep's workdir, each variant's into OUT/variants/<variant>. The same pieces
are a Python API in `lth_jax.reporting` (`load`, `sparsity_summary`, `training_curves`,
`plot_accuracy_vs_sparsity`, `plot_training_curves`, `write_csv`, `write_report`) and
`lth_jax.analysis.mask_overlap`.
"""

from __future__ import annotations

import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import matplotlib

from lth_jax import results as results_lib
from lth_jax.analysis import mask_overlap
from lth_jax.reporting import plots
from lth_jax.reporting import style
from lth_jax.reporting import summaries
from lth_jax.search import sweeps
from lth_jax.search import workdir as workdir_lib


def _is_main_process() -> bool:
  """Whether this is JAX process 0, without starting an accelerator backend in a standalone report
  process (which could take the memory of a GPU a training run is using)."""
  try:
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

    started = xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    started = True
  distributed = getattr(jax.distributed, 'is_initialized', lambda: True)()
  return jax.process_index() == 0 if started or distributed else True


def main(argv: list[str]) -> None:
  """Prints the tables of --workdir and writes the plots and CSV into --output_dir; for a sweep's
  workdir, those of each variant (into OUTPUT_DIR/variants/<variant>)."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  matplotlib.use('Agg')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax's notes on reading the masks are not the report
  workdir = flags.FLAGS.workdir
  output_dir = flags.FLAGS.output_dir or workdir
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    sys.exit(f'lth_jax.report: --output_dir={output_dir} exists and is not a folder')
  if not os.path.isfile(os.path.join(workdir, workdir_lib.SWEEP_FILE)):
    _report(workdir, output_dir)
    return
  for variant in sweeps.load(workdir).variants:
    directory = workdir_lib.variant_directory(workdir, variant)
    if os.path.isfile(os.path.join(directory, results_lib.RESULTS_FILE)):
      print(f'variant {variant.label}')
      _report(directory, os.path.join(output_dir, workdir_lib.VARIANTS_DIRECTORY, variant.label))


def _report(workdir: str, output_dir: str) -> None:
  """The tables, plots and CSV of one lottery workdir."""
  try:
    records = summaries.load(workdir)
  except (FileNotFoundError, ValueError) as error:
    sys.exit(f'lth_jax.report: {error}')
  if not records:
    sys.exit(f'lth_jax.report: {os.path.join(workdir, results_lib.RESULTS_FILE)} holds no records')
  if not _is_main_process():
    return
  print(results_lib.format_table(records))
  print(results_lib.format_sparsity_table(records))
  diverged = results_lib.split_diverged(records)[1]
  if diverged:
    print(f'left {len(diverged)} diverged run(s) out of the means, plots and CSV')
  setting = style.workdir_setting(workdir)  # the plots' titles name the model and dataset
  try:
    paths = plots.write_report(records, output_dir, setting)
  except ValueError as error:
    sys.exit(f'lth_jax.report: {error}')
  overlaps = mask_overlap.overlap_rows(workdir, results_lib.split_diverged(records)[0])
  if overlaps:
    print(mask_overlap.format_overlap_table(overlaps))
  for path in paths + mask_overlap.write_mask_report(workdir, records, output_dir, setting):
    print(f'wrote {path}')


def _define_flags() -> None:
  """The command-line flags (defined only when run as a program, so importing this module next to
  `lth_jax.main` defines no duplicate --workdir)."""
  flags.DEFINE_string(
      'workdir',
      None,
      'Required. The --workdir of a lottery run (it holds results.jsonl) or of a sweep.',
      required=True,
  )
  flags.DEFINE_string(
      'output_dir',
      None,
      'Folder for the plots and CSV files, created if missing (default: the workdir).',
  )


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with --help (or -h, -?, --helpshort; --helpfull for every module's flags)
  printing the command's docstring and flags and exiting 0 (absl's own --help exits with 1)."""
  arguments = set(argv[1 : argv.index('--')] if '--' in argv else argv[1:])
  if arguments & {'-helpfull', '--helpfull'}:
    app.usage(writeto_stdout=True, exitcode=0)
  if arguments & {'-h', '-?', '-help', '--help', '-helpshort', '--helpshort'}:
    app.usage(shorthelp=True, writeto_stdout=True, exitcode=0)
  return app.parse_flags_with_usage(argv)


if __name__ == '__main__':
  _define_flags()
  app.run(main, flags_parser=parse_flags)
