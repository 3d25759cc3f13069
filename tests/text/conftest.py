"""Fixtures of the text plugin tests."""

import pytest

from tlapp_text import backbones


@pytest.fixture(autouse=True)
def only_text_plugin(monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "text")


@pytest.fixture(scope="module")
def tokenizer():
    return backbones.load_tokenizer(backbones.MINILM)
