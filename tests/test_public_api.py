"""``gritkit``'s public names resolve lazily to the objects their modules define."""

from __future__ import annotations

import importlib

import pytest

import gritkit


@pytest.mark.parametrize("name", gritkit.__all__)
def test_public_name_is_the_defining_modules_object(name):
    assert getattr(gritkit, name) is getattr(importlib.import_module(gritkit._PUBLIC[name]), name)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        gritkit.Nope
