"""The `rules` detector's cues in the other top languages of chatbot logs (stages/wildfeedback_cues_intl.py):
each pattern family pinned by turns it must fire on and by new tasks that use the same words and must not."""

from __future__ import annotations

import pytest

from stages.wildfeedback_cues_intl import INTL_CONFIDENCE, INTL_PATTERNS
from stages.wildfeedback_rules import PATTERNS, ROUTE_BELOW
from tests.wildfeedback_fixture import assert_cue_family, detect_turns

PREV = "Here is the text you asked for. It has three short paragraphs about the topic."

# pattern -> (category, turns it must fire on, turns where no pattern of that category may fire)
FAMILIES: dict[str, tuple[str, list[str], list[str]]] = {
    "ar_ja_ko_thanks": ("Gratitude", ["شكرا جزيلا", "ありがとうございます！", "감사합니다"], ["اكتب رسالة شكر لمعلمي"]),
    "ar_ja_praise": ("Praise", ["رائع جدا", "完璧です！"], ["اكتب قصة عن رجل رائع"]),
    "ar_ja_ok": ("Acknowledgment", ["حسنا", "了解しました。", "なるほど"], ["حسنا اكتب لي قصيدة عن البحر وأخرى عن الجبال"]),
    "zh_verdict": ("Negative_Feedback", ["不行", "这个回答我不满意", "你真笨"], ["不行的话有什么替代方案？"]),
    "ru_verdict": ("Negative_Feedback", ["не то", "Мне это не нравится", "фигня какая-то"],
                   ["Почему мне не нравится кофе по утрам?"]),
    "fr_es_de_pt_verdict": ("Negative_Feedback", ["Ce n'est pas ça", "No me gusta", "Gefällt mir nicht", "Não gostei"],
                            ["No me gusta el café, ¿qué otra bebida caliente me recomiendas?"]),
    "ar_ja_verdict": ("Negative_Feedback", ["غير مفيد", "ダメです"], ["使えないフレーズを教えてください"]),
    "zh_redo": ("Revision", ["再来一个", "换个说法", "有没有更简单的方法"], ["有没有更简单的方法学好英语口语和听力呢"]),
    "ru_redo": ("Revision", ["давай по-другому", "напиши заново"], ["Иначе говоря, что такое API?"]),
    "fr_es_de_pt_redo": ("Revision", ["une autre", "otra opción por favor", "Versuch es nochmal", "tente novamente"],
                         ["Une autre question : comment cuire du riz ?"]),
    "ar_ja_redo": ("Revision", ["أعد كتابة النص", "もう一度お願いします", "別の案をください"], ["もう一度説明すると、APIとは何ですか"]),
    "ar_ja_edit": ("Revision", ["اختصرها", "もっと短くして", "日本語でお願いします"], ["短くする方法は何ですか？"]),
    "zh_challenge": ("Factual_Error", ["不是这样的", "flink-maven-plugin 拉取不到", "还是出错"], ["这个函数有什么用"]),
    "ru_challenge": ("Factual_Error", ["ты ошибся", "Откуда ты это взял?", "та же ошибка"], ["Где я ошибся в расчётах?"]),
    "fr_es_de_pt_challenge": ("Factual_Error", ["Ce n'est pas vrai", "No es correcto", "Das stimmt so nicht", "Você errou"],
                              ["Est-ce vrai que les chats dorment 16 heures ?"]),
    "ar_ja_challenge": ("Factual_Error", ["هذا خطأ", "هل أنت متأكد؟", "違います", "まだエラーが出ます"],
                        ["ما هو الخطأ الشائع في البرمجة؟"]),
    "zh_misread": ("Ignored", ["我不是问这个", "你理解错了", "不是诗，是故事"], ["我不是很懂编程，怎么入门？"]),
    "ru_misread": ("Ignored", ["Нет, я просил список", "не об этом", "ты меня не так понял"], ["Я просил начальника об отпуске, как быть?"]),
    "fr_es_de_pt_misread": ("Ignored", ["Non, je voulais une liste", "Me refería a otra cosa", "Nein, ich meinte den Text",
                                        "Você não entendeu", "Ik bedoel de tweede"], ["Je parle français, et toi ?"]),
    "ar_ja_misread": ("Ignored", ["لم أطلب هذا", "قصدت القصة الثانية", "そうじゃなくて、表にして"], ["ماذا تقصد بكلمة نموذج؟"]),
    "ru_more_detail": ("Insufficient_Detail", ["поподробнее", "Распиши по каждому пункту", "маловато"],
                       ["Подробно расскажи о Петре I"]),
    "fr_es_de_pt_more_detail": ("Insufficient_Detail", ["Développe", "explica más", "Erkläre es genauer", "explique mais"],
                                ["Développe une application mobile pour la météo"]),
    "ar_ja_more_detail": ("Insufficient_Detail", ["اشرح أكثر", "もっと詳しく教えて"], ["اشرح بالتفصيل نظرية النسبية ونشأتها وتاريخها الطويل"]),
    "ru_fr_es_de_pt_style": ("Style", ["попроще", "plus simple", "más breve", "zu kompliziert"],
                             ["Plus simple que prévu, la recette de crêpes ?"]),
}


def run(texts: list[str]) -> list[dict]:
    return detect_turns([(t, PREV, None) for t in texts])


def test_every_language_pattern_is_in_the_detector_with_a_confidence():
    for category, patterns in INTL_PATTERNS.items():
        for name, pattern in patterns.items():
            assert PATTERNS[category][name] == pattern
    assert set(INTL_CONFIDENCE) <= {n for p in INTL_PATTERNS.values() for n in p}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_language_cue_families(name):
    category, positives, negatives = FAMILIES[name]
    rows = run(positives + negatives)
    assert_cue_family(name, category, positives, negatives, rows)


def test_bare_edits_in_other_languages_are_less_sure():
    rows = run(["もっと短くして", "давай по-другому", "ты ошибся"])
    assert all(r["dsat"] for r in rows)
    assert rows[0]["confidence"] < ROUTE_BELOW and rows[1]["confidence"] < ROUTE_BELOW  # routed to the model
