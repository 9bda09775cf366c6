"""The docstring examples of the public volume API run and print what they claim."""

import doctest

import pytest

from recon.renderers.volume import api, losses, occupancy


@pytest.mark.parametrize("module", [api, losses, occupancy], ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_docstring_examples(module):
    result = doctest.testmod(module, extraglobs={"torch": __import__("torch")})
    assert result.attempted > 0 and result.failed == 0
