"""Fixtures of the text plugin tests."""

import pytest

from tlapp_text import models


@pytest.fixture(autouse=True)
def only_text_plugin(monkeypatch):
    monkeypatch.setenv("TLAPP_PLUGINS", "text")


@pytest.fixture(scope="module")
def tokenizer():
    return models.load_tokenizer(models.MINILM)
