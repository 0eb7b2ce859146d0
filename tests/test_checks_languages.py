"""The pair checks (pipeline/checks.py) on the other languages of real chat logs: Chinese and Japanese write no
spaces and end sentences with "。", Russian and the Latin-script languages have their own corrections and
conjunctions. Cases are hand-written or read from the real WildChat sample (../shared)."""

from __future__ import annotations

import json
import random

import polars as pl

from pipeline.checks import (
    LOOP_MIN_SENTENCES,
    LOOP_SHARE,
    acknowledges_feedback,
    ends_mid_sentence,
    gives_feedback,
    repeats_itself,
    unprompted_acknowledgement,
)
from pipeline.text import WORD


def flags(expr, texts):
    return pl.DataFrame({"t": texts}).select(expr(pl.col("t")))[:, 0].to_list()


def unprompted(cases: list[tuple[list[tuple[str, str]], str]]) -> list[bool]:
    """``unprompted_acknowledgement`` over (prompt as (role, text) turns, chosen text) cases."""
    df = pl.DataFrame({"prompt": [[{"role": r, "content": t} for r, t in p] for p, _ in cases],
                       "chosen": [[{"role": "assistant", "content": c}] for _, c in cases]})
    return df.select(unprompted_acknowledgement("chosen", "prompt"))[:, 0].to_list()


def wildchat(real) -> list[list[dict]]:
    path = real / "wildchat_sample/conversations.jsonl"
    return [json.loads(line)["messages"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# --- loops -----------------------------------------------------------------------------------------------------


def _loops_counting_words_everywhere(text: pl.Expr) -> pl.Expr:
    """``repeats_itself`` as one chain counting ``WORD`` in every sentence: what its ASCII fast path must equal."""
    sentences = text.str.to_lowercase().str.replace_all(r"[ \t\r\f\v]+", " ").str.extract_all(
        r"[^.!?。！？\n ](?:[^.!?。！？\n]*[^.!?。！？\n ])?[.!?。！？]?")
    worded = pl.element().filter(pl.element().str.count_matches(WORD) >= 3)
    n = worded.len()
    return sentences.list.eval((n >= LOOP_MIN_SENTENCES) & (n - worded.n_unique() >= LOOP_SHARE * n)).list.first().fill_null(False)


def test_loops_counted_by_spaces_in_ascii_answers_and_by_words_elsewhere_agree():
    rng = random.Random(3)
    pieces = ["a b c", "a b", "x y z w", "ok", "  ", " \t ", "\n", ". ", "! ", "? ", "-- -", "。", "写了三遍", "我 在",
              "a\u3000b c", "\u00a0", "é è", "「好」 的", "\r\n", "\v", "…"]

    def text() -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))

    texts = [text() for _ in range(6_000)] + [(text() + rng.choice(". 。!\n")) * rng.randint(4, 8) for _ in range(3_000)]
    texts += ["a b c. " * 6, "我在这里倾听你的心声。" * 6, "a b\u3000c. " * 6, "", None]
    rng.shuffle(texts)
    want = flags(_loops_counting_words_everywhere, texts)
    assert flags(repeats_itself, texts) == want and sum(want) > 100


def test_a_chinese_or_japanese_loop_is_caught():
    """A sentence of Chinese or Japanese had no spaces, so none reached three words and a loop of them passed."""
    loops = ["我在这里倾听你的心声。" * 8, "私はここであなたの話を聞いています。" * 8, "我在这里倾听你的心声！\n" * 8]
    assert flags(repeats_itself, loops) == [True] * 3


def test_short_cjk_sentences_and_punctuation_are_no_words():
    # "好的。" is two words, not three: its "。" is punctuation, as "ok." is one word in English
    assert flags(repeats_itself, ["好的。" * 10, "好的！" * 10, "ok. " * 10]) == [False] * 3
    different = "".join(f"第{i}步：把第{i}个文件复制到目标文件夹。" for i in range(10))
    assert flags(repeats_itself, [different]) == [False]


def test_no_real_wildchat_answer_loops(real):
    """On the 2,410 WildChat answers (360 hold CJK) the largest share of repeated CJK sentences is 0.37, a legal
    template's field list, below ``LOOP_SHARE``: none is a loop."""
    answers = [m["content"] for c in wildchat(real) for m in c if m["role"] == "assistant"]
    assert len(answers) == 2410 and not any(flags(repeats_itself, answers))


# --- cut-off answers -----------------------------------------------------------------------------------------


def test_cjk_and_arabic_commas_end_no_answer():
    cut = ["我们需要考虑以下几个方面：价格、质量、", "首先要提供建设性的批评与指导，", "هذا مهم، وأيضاً،",
           "請確認以下項目：名前、"]
    assert flags(ends_mid_sentence, cut) == [True] * 4
    # a sign-off on a line of its own, and finished answers, are not cut
    done = ["感谢您的阅读。\n\n此致，", "申请人：XXX\n此致，\n敬礼！", "这是完整的答案。", "هل هذا واضح؟"]
    assert flags(ends_mid_sentence, done) == [False] * 4


def test_a_dangling_conjunction_or_preposition_ends_no_answer():
    cut = ["Детский церебральный паралич характеризуется нарушением и", "Поставьте чайник на",
           "Man muss die Preise und", "Il faut tenir compte des coûts et", "Hay que considerar el precio pero"]
    assert flags(ends_mid_sentence, cut) == [True] * 5
    # words that end sentences in another language stay: "solve for y", "the answer is no", "example.com"
    done = ["Solve for y", "The answer is no", "Write to info@example.com", "Es ist gut so, bleib da",
            "Вот и всё", "Je te remercie"]
    assert flags(ends_mid_sentence, done) == [False] * 6


def test_open_code_block_ends_on_arabic_question_mark():
    assert flags(ends_mid_sentence, ["```\nx = 1\nهل هذا واضح؟", "```\nx = 1\n"]) == [False, True]


def test_real_chinese_answer_cut_at_a_comma(real):
    """The one WildChat answer cut at "，" passed; it is the only one of the 2,410 answers flagged for a "，"."""
    answers = [m["content"] for c in wildchat(real) for m in c if m["role"] == "assistant"]
    cut = [a for a, hit in zip(answers, flags(ends_mid_sentence, answers), strict=True) if hit and a.endswith("，")]
    assert len(cut) == 1 and cut[0].endswith("提供建设性的批评与指导，")


# --- acknowledgements and feedback ---------------------------------------------------------------------------

FEEDBACK = ["写的不对", "不是金庸小说里的", "你说的是真的吗 还是瞎猜的", "还是报错", "Нет там никакого settings",
            "пишет ошибку KeyError: 'population'", "Это не то, что я просил", "tu as omis tout le style ?",
            "Non, c'est faux", "Eso no es correcto", "Nochmal. Das war schon besser", "Das ist falsch",
            "Não, está errado"]
REQUESTS = ["给我介绍一下中国的地理知识", "飞机在白天还是晚上飞行更安全？", "Как в c# сравнить все числа из двух массивов?",
            "Explique-moi la photosynthèse", "¿Cuál es la capital de Francia?", "Wie funktioniert ein Motor?",
            "Qual é a capital do Brasil?", "是不是所有的鸟都会飞？"]


def test_feedback_in_other_languages():
    assert flags(gives_feedback, FEEDBACK) == [True] * len(FEEDBACK)
    assert flags(gives_feedback, REQUESTS) == [False] * len(REQUESTS)


def test_an_apology_after_a_chinese_or_russian_correction_is_prompted():
    cases = [([("user", "用python提取地址"), ("assistant", "import re ..."), ("user", "写的不对")],
              "对不起，让我再次尝试提供一个更准确的Python代码示例："),
             ([("user", "Где настройки?"), ("assistant", "В меню settings."), ("user", "Нет там никакого settings")],
              "Извините за путаницу. Настройки находятся в профиле."),
             ([("user", "Quelle est la capitale de l'Australie ?"), ("assistant", "Sydney."), ("user", "Non, c'est faux")],
              "Vous avez raison, c'est Canberra.")]
    assert unprompted(cases) == [False] * 3
    # the same apologies to a fresh request are still caught
    assert unprompted([([("user", p[0][1])], c) for p, c in cases]) == [True] * 3


def test_a_french_request_for_clarification_is_no_acknowledgement():
    """"Je m'excuse, mais pourriez-vous préciser ..." asks, as "I apologize, but could you clarify" does; a real
    WildChat answer to a fresh question was read as reacting to feedback."""
    assert flags(acknowledges_feedback, ["Je m'excuse, mais pourriez-vous préciser votre question ?",
                                         "Je m'excuse pour la confusion. Voici le code corrigé."]) == [False, True]


def test_real_wildchat_corrections_make_their_apologies_prompted(real):
    """The Chinese corrections of the WildChat sample whose next answer apologises: each apology read as
    unprompted, so a pair choosing it was dropped."""
    turns = {"写的不对", "不是金庸小说里的", "你说的是真的吗 还是瞎猜的"}
    cases = [([(m["role"], m["content"]) for m in c[:i]], c[i]["content"]) for c in wildchat(real)
             for i in range(1, len(c)) if c[i]["role"] == "assistant" and c[i - 1]["content"] in turns]
    assert len(cases) == 3 and flags(acknowledges_feedback, [a for _, a in cases]) == [True] * 3
    assert unprompted(cases) == [False] * 3
