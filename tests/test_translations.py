"""Every message the console shows has a Korean and an English translation, and the compiled
catalogs (.mo, what the app reads; committed so `make run` needs no build step) match the .po files."""
from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "gateway" / "translations"


def extracted() -> set[str]:
    with open(ROOT / "babel.cfg", encoding="utf-8") as file:
        method_map, options_map = parse_mapping_cfg(file)
    found = set()
    for _file, _line, message, _comments, _context in extract_from_dir(
            str(ROOT), method_map, options_map,
            keywords={"_": None, "gettext": None, "lazy_gettext": None, "ngettext": (1, 2)}):
        found.add(message if isinstance(message, str) else message[0])
    return found


def by_singular(message) -> tuple:
    """(the message's id, its forms as a tuple): a plural's id and forms are given as sequences."""
    if isinstance(message.id, str):
        return message.id, (message.string,)
    return message.id[0], tuple(message.string)


@pytest.mark.parametrize("language", ["ko", "en"])
def test_every_message_is_translated_and_compiled(language):
    with open(TRANSLATIONS / language / "LC_MESSAGES" / "messages.po", "rb") as file:
        po = dict(map(by_singular, (m for m in read_po(file, locale=language) if m.id)))
    with open(TRANSLATIONS / language / "LC_MESSAGES" / "messages.mo", "rb") as file:
        mo = dict(map(by_singular, (m for m in read_mo(file) if m.id)))
    messages = extracted()
    assert len(messages) > 100  # the extraction itself worked
    untranslated = sorted(m for m in messages if not po.get(m) or not all(po[m]))
    assert untranslated == [], f"no {language} translation (run `make messages`, then translate): {untranslated}"
    assert mo == po, "messages.mo is older than messages.po: run `make messages`"
    if language == "ko":
        assert po["Webhook sources"] == ("웹훅 소스 관리",) and po["Add source"] == ("새 소스 추가",)
