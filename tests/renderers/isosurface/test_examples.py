"""The docstring examples of the public isosurface API run and print what they claim."""

import doctest

import pytest

from recon.renderers.isosurface import api


@pytest.mark.parametrize("module", [api], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"torch": __import__("torch")})
    assert result.attempted > 0 and result.failed == 0
