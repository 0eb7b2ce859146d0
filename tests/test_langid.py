"""Language identification (pipeline/langid.py): the packaged identifier on hand-written cases."""

from __future__ import annotations

import polars as pl
import pytest

from pipeline.langid import LANGUAGES, detect_language, detect_languages

CASES = [
    ("en", "My grinder gets hot when I grind fine enough for espresso. Should I upgrade it?"),
    ("zh", "请帮我写一份关于人工智能分镜模型研发的开题报告，包括研究背景和预算。"),
    ("ru", "Напиши, пожалуйста, короткое письмо коллеге о переносе встречи на пятницу."),
    ("fr", "Peux-tu me dire quel prompt utiliser pour dessiner un ciel nocturne avec des étoiles ?"),
    ("es", "¿Cuál es la mejor manera de preparar café de filtro por la mañana sin amargor?"),
    ("de", "Wie lange kann ich frisch gemahlenen Kaffee aufbewahren, bevor er sein Aroma verliert?"),
    ("pt", "Você pode me explicar a diferença entre café expresso e café coado, por favor?"),
    ("ja", "このコードのエラーを修正してください。関数が空のリストを返します。"),
    ("ar", "هل يمكنك أن تشرح لي كيف أحضر القهوة العربية في المنزل؟"),
]


@pytest.mark.parametrize(("code", "text"), CASES)
def test_common_languages_of_chat_logs(code, text):
    assert code in LANGUAGES and detect_language(text) == code


def test_batched_column_nulls_and_symbols():
    texts = pl.Series([c[1] for c in CASES] + [None, "1234 // ?!", CASES[0][1]])
    out = detect_languages(texts).to_list()
    assert out == [c[0] for c in CASES] + ["und", "und", "en"]


def test_only_the_opening_is_read():
    # A long English message that quotes a foreign passage at the end stays English.
    text = CASES[0][1] * 20 + CASES[2][1] * 5
    assert detect_language(text, max_chars=600) == "en"
