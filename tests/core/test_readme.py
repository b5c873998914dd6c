"""The README's code runs as written (every ```python block, in order, in one namespace)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_examples_run():
  blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
  assert len(blocks) >= 4
  namespace = {}
  for block in blocks:
    exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 (our own README)
  assert namespace["grads"]["loc"].shape == (3,)
  assert namespace["report"].moments.variance["loc"].shape == (3,)
