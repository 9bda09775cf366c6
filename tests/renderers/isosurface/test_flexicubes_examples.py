"""The docstring examples of the FlexiCubes API run and print what they claim."""

import doctest

import pytest

from recon.renderers.isosurface import flexicubes_api, flexicubes_losses


@pytest.mark.parametrize(
    "module", [flexicubes_api, flexicubes_losses], ids=lambda m: m.__name__.rsplit(".", 1)[-1]
)
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"torch": __import__("torch")}, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
