"""Regenerates the README's figure images (docs/figures/) from each figure command's --quick run.

    python -m experiments.regenerate_figures                       # every figure (it prints its wall time)
    python -m experiments.regenerate_figures --only=fig05,fig10    # some of them

Each command runs in its own subprocess on the CPU (one device), in WORKDIR/<name> (default
/tmp/lth_jax_figures), so a second call resumes: it retrains nothing and only redraws. Each image is
then copied to OUTPUT_DIR (default docs/figures), at most MAX_WIDTH pixels wide (the commands draw at
150 dpi, so no image is shrunk) and in 256 colours, its resolution kept, written atomically. The commands are the "quick" column of the README's Figures table: every one but the blog's
runs the one setting of configs/figures.py. Each figure's caption (`experiments.captions`: the claim it
reproduces, whether the image shows it, and its numbers) is written to OUTPUT_DIR/<name>.md and between
the figure's markers in the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import re
import subprocess
import sys
import time
from typing import Sequence

from lth_jax import results as results_lib
from experiments import captions

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_WIDTH = 2000  # wider than any figure of the commands at their 150 dpi (the widest is about 1800)


@dataclasses.dataclass(frozen=True)
class Figure:
  """One image of the README: the commands that make it (run in order; '{workdir}' is replaced) and
  which of their outputs becomes which image."""

  name: str
  commands: tuple[tuple[str, ...], ...]
  images: tuple[tuple[str, str], ...]  # (output file in the workdir, image file in OUTPUT_DIR)


SETTING = '--config=configs/figures.py'  # the one setting of every quick figure but the blog's
RESET_STEPS = '--reset_steps=0,10,50'  # within the first 5% of the setting's 1000 steps, as in the paper


def _command(module: str, *arguments: str) -> tuple[str, ...]:
  return ('-m', module, '--workdir={workdir}', *arguments)


FIGURES = (
    Figure(
        'blog',
        (_command('lth_jax.main', '--config=configs/sum_of_two.py', '--config.trials=3'), _command('lth_jax.report')),
        (('accuracy_vs_sparsity.png', 'blog_sum_of_two.png'),),
    ),
    Figure(
        'fig01',
        (_command('experiments.lottery_sweep', SETTING, '--branches=snip,reinit'),),
        (('accuracy_vs_sparsity.png', 'fig01_iterative_vs_snip.png'),),
    ),
    Figure(
        'fig02',
        (_command('experiments.learning_rate_sweep', SETTING),),
        (('learning_rate_sweep.png', 'fig02_learning_rate.png'),),
    ),
    Figure(
        'late_reset',  # Figures 3, 4, 6, 11 and 14 (12 and 13 are the same commands on other configs)
        (
            _command('experiments.late_reset_sweep', SETTING, RESET_STEPS, '--stability_level=0'),
            _command('experiments.stability_sweep', SETTING, RESET_STEPS, '--level=3'),
        ),
        (
            ('late_reset_curves.png', 'fig03_late_reset_curves.png'),
            ('stability_vs_reset_step.png', 'fig04_stability_vs_reset_step.png'),
            ('stability_vs_reset_step_max_normalized.png', 'fig06_stability_max_normalized.png'),
            ('stability_over_training.png', 'fig11_stability_over_training.png'),
            ('stability_over_training_max_normalized.png', 'fig14_stability_over_training_max_normalized.png'),
        ),
    ),
    Figure(
        'fig05',
        (_command('experiments.late_reset_sweep', SETTING, RESET_STEPS, '--mode=one_shot', '--stability_level=0'),),
        (('late_reset_table.png', 'fig05_late_reset_one_shot.png'),),
    ),
    Figure(
        'fig07',
        (_command('experiments.turnaround_sweep', SETTING),),
        (('turnaround_iterative.png', 'fig07_turnaround_iterative.png'),),
    ),
    Figure(
        'fig08',
        (_command('experiments.weight_fate', SETTING),),
        (('weight_fate.png', 'fig08_weight_fate.png'),),
    ),
    Figure(
        'fig09',
        (_command('experiments.turnaround_sweep', SETTING, '--mode=one_shot'),),
        (('turnaround_one_shot_table.png', 'fig09_turnaround_one_shot.png'),),
    ),
    Figure(
        'fig10',
        (_command('experiments.pruning_mode_sweep', SETTING),),
        (('pruning_mode_sweep.png', 'fig10_pruning_modes.png'),),
    ),
    Figure(
        'digits',  # Frankle & Carbin's main claim on real (8x8) handwritten digits
        (_command('experiments.lottery_sweep', SETTING, '--config.dataset.name=digits', '--branches=reinit'),),
        (('accuracy_vs_sparsity.png', 'digits_lottery.png'),),
    ),
    Figure(
        'missing_the_mark',  # Frankle et al. 2021: pruning at initialization against IMP with rewinding
        (_command('experiments.init_pruning_sweep', SETTING, '--rewind_step=10'),),
        (('init_pruning_sweep.png', 'missing_the_mark_pruning_at_init.png'),),
    ),
)


def save_small_png(source: pathlib.Path, destination: pathlib.Path) -> None:
  """Copies a PNG at most MAX_WIDTH pixels wide, in 256 colours, with its dpi (scaled down with the
  image when it is shrunk), atomically."""
  from PIL import Image  # Pillow ships with matplotlib

  with Image.open(source) as image:
    dpi = float(image.info.get('dpi', (72.0, 72.0))[0])
    image = image.convert('RGB')
    if image.width > MAX_WIDTH:
      dpi *= MAX_WIDTH / image.width
      image = image.resize(
          (MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), getattr(Image, 'Resampling', Image).LANCZOS
      )
    image = image.quantize(colors=256)
  destination.parent.mkdir(parents=True, exist_ok=True)
  with results_lib.atomic_open(str(destination), 'wb') as file:
    image.save(file, format='PNG', optimize=True, dpi=(round(dpi), round(dpi)))


def regenerate(figure: Figure, workdir: pathlib.Path, output_dir: pathlib.Path) -> list[pathlib.Path]:
  """Runs the figure's commands in `workdir` and copies its images to `output_dir`; returns their paths."""
  environment = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='--xla_force_host_platform_device_count=1')
  for command in figure.commands:
    arguments = [sys.executable, *(part.format(workdir=workdir) for part in command)]
    completed = subprocess.run(arguments, cwd=REPO_ROOT, env=environment, capture_output=True, text=True)
    if completed.returncode:
      raise RuntimeError(
          f'{figure.name}: `{" ".join(arguments[1:])}` failed (exit {completed.returncode}):\n'
          + completed.stderr[-3000:]
      )
  written = []
  for output, image in figure.images:
    save_small_png(workdir / output, output_dir / image)
    written.append(output_dir / image)
  return written


def caption_markers(name: str) -> tuple[str, str]:
  """The README lines around the caption of figure `name`."""
  return (
      f'<!-- caption:{name} (written by experiments.regenerate_figures from docs/figures/{name}.md) -->',
      f'<!-- /caption:{name} -->',
  )


def write_caption(figure: Figure, workdir: pathlib.Path, output_dir: pathlib.Path) -> pathlib.Path | None:
  """Writes the figure's caption (`captions.CAPTIONS`, from its workdir) to OUTPUT_DIR/<name>.md."""
  caption = captions.CAPTIONS.get(figure.name)
  if caption is None:
    return None
  path = output_dir / f'{figure.name}.md'
  with results_lib.atomic_open(str(path)) as file:
    file.write(caption(str(workdir)) + '\n')
  return path


def update_readme(readme: pathlib.Path, output_dir: pathlib.Path) -> list[str]:
  """Puts each caption file of `output_dir` between its markers in `readme` (atomically); returns the
  names of the captions it holds."""
  text = readme.read_text()
  placed = []
  for path in sorted(output_dir.glob('*.md')):
    begin, end = caption_markers(path.stem)
    pattern = re.compile(re.escape(begin) + r'\n.*?' + re.escape(end), re.S)
    if pattern.search(text):
      text = pattern.sub(lambda _: f'{begin}\n{path.read_text()}{end}', text)
      placed.append(path.stem)
  with results_lib.atomic_open(str(readme)) as file:
    file.write(text)
  return placed


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """The command line."""
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--only', default='', help=f'comma-separated names, of {", ".join(f.name for f in FIGURES)}')
  parser.add_argument('--workdir', default='/tmp/lth_jax_figures', help='where the runs are kept (and resumed)')
  parser.add_argument('--output_dir', default=str(REPO_ROOT / 'docs' / 'figures'), help='where the images go')
  parser.add_argument(
      '--readme',
      default=None,
      help="where the captions go ('' for nowhere; default: this repository's README.md when --output_dir is "
      'docs/figures, else nowhere)',
  )
  args = parser.parse_args(argv)
  if args.readme is None:
    default_output = pathlib.Path(args.output_dir).resolve() == (REPO_ROOT / 'docs' / 'figures').resolve()
    args.readme = str(REPO_ROOT / 'README.md') if default_output else ''
  return args


def main(argv: Sequence[str] | None = None) -> int:
  """Regenerates the chosen figures; exits 2 naming an unknown one."""
  args = parse_args(argv)
  names = [name for name in args.only.split(',') if name]
  unknown = sorted(set(names) - {figure.name for figure in FIGURES})
  if unknown:
    print(f'regenerate_figures: unknown --only {", ".join(unknown)}; known: {", ".join(f.name for f in FIGURES)}')
    return 2
  began = time.perf_counter()
  output_dir = pathlib.Path(args.output_dir)
  for figure in FIGURES:
    if names and figure.name not in names:
      continue
    started = time.perf_counter()
    workdir = pathlib.Path(args.workdir) / figure.name
    paths = regenerate(figure, workdir, output_dir)
    caption = write_caption(figure, workdir, output_dir)
    paths += [caption] if caption is not None else []
    print(f'{figure.name}: {", ".join(map(str, paths))} ({time.perf_counter() - started:.0f} s)', flush=True)
  if args.readme:
    placed = update_readme(pathlib.Path(args.readme), output_dir)
    print(f'captions in {args.readme}: {", ".join(placed) or "none"}')
  print(f'regenerate_figures: {time.perf_counter() - began:.0f} s in all', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
