"""Continual machine translation: rows of a source sentence, its reference translation(s) and the language pair;
a new language pair arrives with each stage and the earlier pairs are scored again after every stage (the
multilingual continual-learning protocol of Garcia et al. 2021, "Towards Continual Learning for Multilingual
Machine Translation via Vocabulary Substitution", and Cao et al. 2024, "Continual Learning for Neural Machine
Translation"). Scored with corpus-level BLEU and chrF via sacrebleu (scorers `bleu`, `chrf`).

A row: `{"source": "...", "target": "..." or ["...", ...], "pair": "en-de"}`, or with `src_lang` and `tgt_lang`
instead of `pair` (for codes with a region, `pt-BR`). Several targets are several references (BLEU and chrF take
them all; the first is what the model learns)."""

from __future__ import annotations

import json
import re
from typing import Any, ClassVar

from lifelong.data.scenarios import SCENARIOS
from lifelong.data.scenarios.base import ScenarioFormat

LANGUAGES = {
    "ar": "Arabic",
    "bg": "Bulgarian",
    "ca": "Catalan",
    "cs": "Czech",
    "cy": "Welsh",
    "da": "Danish",
    "de": "German",
    "el": "Greek",
    "en": "English",
    "es": "Spanish",
    "et": "Estonian",
    "eu": "Basque",
    "fa": "Persian",
    "fi": "Finnish",
    "fr": "French",
    "ga": "Irish",
    "gl": "Galician",
    "gu": "Gujarati",
    "he": "Hebrew",
    "hi": "Hindi",
    "hr": "Croatian",
    "hu": "Hungarian",
    "id": "Indonesian",
    "is": "Icelandic",
    "it": "Italian",
    "ja": "Japanese",
    "kk": "Kazakh",
    "ko": "Korean",
    "lt": "Lithuanian",
    "lv": "Latvian",
    "ms": "Malay",
    "mt": "Maltese",
    "nb": "Norwegian Bokmal",
    "nl": "Dutch",
    "no": "Norwegian",
    "pl": "Polish",
    "ps": "Pashto",
    "pt": "Portuguese",
    "ro": "Romanian",
    "ru": "Russian",
    "sk": "Slovak",
    "sl": "Slovenian",
    "sr": "Serbian",
    "sv": "Swedish",
    "sw": "Swahili",
    "ta": "Tamil",
    "th": "Thai",
    "tr": "Turkish",
    "uk": "Ukrainian",
    "ur": "Urdu",
    "vi": "Vietnamese",
    "zh": "Chinese",
}
"""English names of common ISO 639-1 codes, for the default prompt; other codes are shown as written."""

CODE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def language_name(code: str) -> str:
    """`de` -> `German`; a code not in `LANGUAGES` stays as it is."""
    return LANGUAGES.get(code.lower(), code)


def _shown(v: Any) -> str:
    """A value as the user wrote it (JSON), shortened."""
    s = json.dumps(v, default=str, ensure_ascii=False)
    return s if len(s) <= 60 else s[:57] + "..."


@SCENARIOS.register("translation")
class Translation(ScenarioFormat):
    fields: ClassVar[tuple[tuple[str, ...], ...]] = (
        ("source", "target", "pair"),
        ("source", "target", "src_lang", "tgt_lang"),
    )
    scorer = "bleu"
    example = (
        '{"source": "Enter a valid date.", "target": "Geben Sie ein gültiges Datum ein.", "pair": "en-de"}\n'
        "Translate from English to German: Enter a valid date. -> Geben Sie ein gültiges Datum ein."
    )
    protocol = (
        "Garcia et al. 2021 (continual multilingual MT: a new language pair per stage, old pairs re-scored); "
        "BLEU/chrF via sacrebleu (Post 2018)"
    )

    def check(self, row: dict[str, Any], where: str) -> None:
        super().check(row, where)
        if not isinstance(row["source"], str) or not row["source"].strip():
            raise ValueError(f"{where}: field 'source' must be a non-empty string, got {_shown(row['source'])}")
        t = row["target"]
        if isinstance(t, list):
            bad = next((k for k, x in enumerate(t) if not isinstance(x, str) or not x.strip()), None)
            if not t or bad is not None:
                what = "is empty" if not t else f"has {_shown(t[bad or 0])} at index {bad}"
                raise ValueError(
                    f"{where}: field 'target' {what}; give one reference string or a non-empty list of them"
                )
        elif not isinstance(t, str) or not t.strip():
            raise ValueError(
                f"{where}: field 'target' must be a non-empty string (or a list of reference strings), got {_shown(t)}"
            )
        self.languages(row, where)

    def languages(self, row: dict[str, Any], where: str = "row") -> tuple[str, str]:
        """The (source, target) language codes of a row, from `pair` or `src_lang` + `tgt_lang`."""
        codes: tuple[str, str] | None = None
        if "pair" in row:
            p = row["pair"]
            parts = p.split("-") if isinstance(p, str) else []
            if len(parts) != 2 or not all(CODE.match(x) for x in parts):
                raise ValueError(
                    f"{where}: field 'pair' must be two language codes joined by '-', like \"en-de\", got "
                    f"{_shown(p)}; for codes with a region (pt-BR) give 'src_lang' and 'tgt_lang' instead"
                )
            codes = (parts[0], parts[1])
        if "src_lang" in row or "tgt_lang" in row:
            for f in ("src_lang", "tgt_lang"):
                v = row.get(f)
                if not isinstance(v, str) or not v.strip() or any(c.isspace() for c in v):
                    raise ValueError(
                        f'{where}: field {f!r} must be a language code like "en" or "pt-BR", got {_shown(v)}'
                        + (" (give both src_lang and tgt_lang)" if v is None else "")
                    )
            given = (row["src_lang"], row["tgt_lang"])
            if codes is not None and given != codes:
                raise ValueError(
                    f"{where}: field 'pair' {_shown(row['pair'])} disagrees with src_lang/tgt_lang "
                    f"{_shown('-'.join(given))}; give one or make them agree"
                )
            codes = given
        if codes is None:
            raise ValueError(f"{where}: a translation row needs 'pair' (\"en-de\") or 'src_lang' and 'tgt_lang'")
        return codes

    def pair(self, row: dict[str, Any]) -> str:
        return "-".join(self.languages(row))

    def references(self, row: dict[str, Any]) -> list[str]:
        t = row["target"]
        return [str(x) for x in t] if isinstance(t, list) else [str(t)]

    def prompt(self, row: dict[str, Any]) -> str:
        src, tgt = self.languages(row)
        return f"Translate from {language_name(src)} to {language_name(tgt)}: {row['source']}"

    def response(self, row: dict[str, Any]) -> str:
        return self.references(row)[0]

    def targets(self, row: dict[str, Any]) -> list[str]:
        return self.references(row)

    def item(self, row: dict[str, Any]) -> dict[str, Any]:
        return {"pair": self.pair(row), "source": str(row["source"])}
