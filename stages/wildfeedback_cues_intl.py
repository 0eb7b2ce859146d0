"""Cue patterns of the `rules` feedback detector in the other top languages of real chatbot logs.

Category -> {pattern name: regex}, merged into `stages.wildfeedback_cues.PATTERNS` after the English ones.
Names are ``<lang>_<what>`` (``fr_es_de_pt_`` for one pattern over the four Latin-script languages,
``ar_ja_`` for Arabic and Japanese, ``other_`` for a form across several). The commonest ways users
say, in Chinese, Russian, French, Spanish, German, Portuguese, Arabic and Japanese: thanks, praise, ok;
"rewrite / again / another one", "shorter / simpler / in <language>", "more detail", "that's wrong /
you're sure? / still fails", "that's not what I asked / no, I meant", "useless / I don't like it".

Patterns see the same normalised text as the English ones (lower case, quoted material cut out). CJK
patterns carry no ``\\b``. A cue whose words also open new tasks ("développe une application", "подробно
расскажи о ...", "详细介绍一下X") is anchored to a short turn that is nothing but the cue (``^...$``).
Every pattern compiles with Python's ``re`` (the bench's naive baseline runs them).
"""

from __future__ import annotations

INTL_PATTERNS: dict[str, dict[str, str]] = {
    "Gratitude": {
        "zh_thanks": r"谢谢|多谢|谢啦|非常感谢|感谢(?:你|您)|^感谢\W*$",
        "ru_thanks": r"\b(?:спасибо|благодарю|спс)\b",
        "fr_es_de_pt_thanks": r"\b(?:merci|gracias|danke|dankeschön|vielen dank|obrigad[oa])\b",
        "ar_ja_ko_thanks": r"شكرا|شكرًا|شكراً|مشكور|[أا]شكرك|جزاك الله|ありがとう|有難う|感謝します|감사합니다|고마워|고맙습니다",
    },
    "Praise": {
        "zh_praise": r"^\W*(?:太棒了|很棒|真棒|非常好|完美|厉害|很好|不错)|(?:你|这个|回答)(?:真|太|很|非常)(?:厉害|棒|好)|(?:写|说|回答|做)得(?:很|非常|真|太)?(?:好|棒|不错)",
        "ru_praise": r"^\W*(?:отлично|супер|класс|прекрасно|замечательно|великолепно|круто|здорово|идеально)\b|\bмолодец\b",
        "fr_es_de_pt_praise": r"^\W*(?:parfait|génial|excellent|très bien|bravo|perfecto|genial|excelente|muy bien|perfekt|toll|sehr gut|ausgezeichnet|perfeito|ótimo|muito bom)\b",
        "ar_ja_praise": r"^\W*(?:رائع|ممتاز|[أا]حسنت|عظيم|جميل جدا|素晴らしい|すばらしい|完璧|最高|すごい|いいね)",
    },
    "Acknowledgment": {
        "zh_ok": r"^(?:好的|好吧|嗯+|明白了?|知道了|了解|懂了|收到)(?:[，,。.！!～~]|$)",
        "ru_ok": r"^(?:хорошо|ок|окей|понятно|ясно|понял|поняла)(?:[.!,]|$)",
        "fr_es_de_pt_ok": r"^(?:d'accord|compris|vale|de acuerdo|entendido|alles klar|verstanden|entendi|certo)(?:[.!,]|$)",
        "ar_ja_ok": r"^(?:حسنا|حسنًا|تمام|فهمت|わかりました|分かりました|了解(?:です|しました)?|なるほど)(?:[.!،,。、！]|$)",
    },
    "Negative_Feedback": {
        "zh_bad": r"没用|垃圾|太差|很差|废话|什么鬼|不是我要的|不是我想要的",
        "ru_bad": r"\b(?:бред|ерунда|чушь|бесполезно)\b|\bэто не то\b",
        "fr_es_de_pt_bad": r"\b(?:n'importe quoi|c'est nul|inutile|no sirve|inútil|nutzlos|quatsch|unsinn|não serve)\b",
        # Verdicts on the answer: "useless", "I don't like it", "that's not it", "you're stupid".
        "zh_verdict": r"^\W*(?:不行|不好|不满意|很烂|太烂|糟糕)\W*$|不满意|差劲|什么玩意|你(?:好|真|太)?(?:笨|蠢|傻)|答非所问",
        "ru_verdict": r"^\W*(?:плохо|ужасно|не то|не так|не годится|не подходит)\W*$|\b(?:фигня|херня|бредятина|ты (?:тупой|глупый|"
                      r"бесполезен)|не помогло|не помогает|это не подходит|мне это не нравится|не нравится (?:это|такой|такая|такое|вариант|ответ))\b|"
                      r"^\W*(?:мне )?не нравится\W*$",
        "fr_es_de_pt_verdict": r"\b(?:pas terrible|c'est pas ça|ce n'est pas ça|ça ne me plaît pas|tu es (?:nul|bête|stupide)|"
                               r"eso no es|no es eso|pésimo|eres (?:tonto|inútil|malo)|gefällt mir nicht|das ist nicht gut|"
                               r"du bist (?:dumm|blöd|nutzlos)|blödsinn|não gostei|não é isso|péssimo|você é (?:burro|inútil))\b|"
                               r"^\W*(?:nul|horrible|schlecht|ruim|mal|je n'aime pas(?: ça| du tout)?|no me gusta(?:n)?(?: (?:eso|esto|nada|así))?|"
                               r"não gosto(?: disso)?)\W*$",
        "ar_ja_verdict": r"غير مفيد|ليس مفيدا?|لا فائدة|سيء|سيئ|^\W*(?:لا|لا يعمل)\W*$|役に立たない|^\W*ダメ(?:です|だ)?\W*$",
    },
    "Revision": {
        "zh_again": r"重新(?:写|生成|回答|来|做|给)|再(?:写|来|给我|生成)一|换(?:一个|一种|个|一下)|^.{0,6}(?:再|重新)?(?:优化|改写|修改|精简|简化|润色|改进|完善)(?:一?下)?.{0,6}$",
        "zh_edit": r"^[^怎如何吗?？]{0,8}(?:改成|换成|改为|写得|重写|缩短|加上|去掉|删掉|用(?:中文|英文|英语|汉语))[^怎如何吗?？\s]{0,20}$",
        "ru_edit": r"\b(?:сделай|напиши|перепиши|переведи|сформулируй)(?: (?:его|её|это|текст|ответ|их))? (?:короче|покороче|подробнее|проще|иначе|по-другому|длиннее|формальнее|по-русски|на русском|на английском)\b",
        "ru_again": r"\b(?:перепиши|переделай|исправь|переформулируй|сократи|упрости|улучши|измени\w* (?:ответ|текст|это)|ещё раз|еще раз|другой вариант|другие варианты|попробуй (?:ещё|еще|снова))\b|^\W*(?:альтернативн\w+|другой|другая|другое) \w+\W*$",
        "other_in_language": r"^\W*(?:en (?:fran[cç]ais|anglais|ingl[eé]s|espa[nñ]ol|portugu[eê]s|alem[aá]n)|auf (?:deutsch|englisch)|"
                             r"em (?:portugu[eê]s|ingl[eê]s)|на (?:русском|английском)|по-(?:русски|английски))(?: (?:por favor|"
                             r"s'il (?:te|vous) pla[iî]t|bitte|please|пожалуйста))?\W*$",
        "de_should": r"^\W*(?:es|das|der text|die antwort|das gedicht) soll(?:te|ten)? (?:sich )?(?:\w+ ){0,4}\w+\W*$|"
                     r"^\W*(?:achte|achten sie) (?:bitte )?(?:auf|darauf)\b|^\W*schreib(?:e)? (?:den text|die antwort|das gedicht|es|das) "
                     r"(?:\w+ )?\w+er\b",
        "fr_es_de_pt_again": r"\b(?:réécris|reformule|refais|recommence|encore une fois|une autre version|reescribe|otra vez|de nuevo|otra versión|schreib (?:es|das) (?:neu|nochmal|um)|noch einmal|nochmal|andere version|reescreva|refaça|de novo|outra versão)\b",
        "zh_more": r"^.{0,6}(?:再|稍微|稍稍)[一-鿿]{1,4}(?:一点|一些|点儿?|些)[^?？吗么\n]{0,8}$|"
                   r"^.{0,6}(?:写得|说得|改得|变得)?更(?:加)?[^新\W][一-鿿]{0,3}(?:一点|一些|点|些)?[^?？吗么\n]{0,6}$",
        "zh_it": r"^.{0,4}(?:把|将)(?:它|这|上面|以上|上述|刚才|你)[^?？吗么\n]{0,10}(?:改|写|换|翻译|缩|扩|删|加|变)[^?？吗么\n]{0,15}$|"
                 r"^(?:不要|别|不用|去掉|删掉|删除)[^?？吗么\n]{1,15}$",
        "ru_bare_edit": r"^\W*(?:а |и |теперь |ну |пожалуйста,? )?(?:добавь|убери|удали|замени|измени|сократи|дополни|исправь|"
                        r"поменяй|переделай|расширь|упрости|улучши|перефразируй|переформулируй)\b[^?\"]{0,60}$|"
                        r"^\W*(?:а |и |теперь |ну )?(?:сделай|напиши|перепиши|опиши|сформулируй|объясни)(?: (?:его|её|ее|это|"
                        r"текст|ответ|их|мне))?(?: (?:ещё|еще|немного|чуть|гораздо|намного))? (?:более|менее|\w+(?:ее|ей))\b"
                        r"[^?\"]{0,40}$",
        "es_bare_edit": r"^\W*(?:ahora |por favor,? |puedes |podrías )?(?:hazlo|hazla|haz(?:lo|la)? más|reescr[ií]bel[oa]|"
                        r"reescribe|mej[oó]ral[oa]|mejora|c[aá]mbial[oa]|cambia|corr[ií]gel[oa]|corrige|ac[oó]rtal[oa]|acorta|"
                        r"res[uú]mel[oa]|agrega|añade|quita|elimina|simplif[ií]cal[oa]|simplifica)\b[^?\"]{0,60}$",
        "fr_bare_edit": r"^\W*(?:maintenant |peux-tu |pouvez-vous |s'il te plaît,? )?(?:fais(?:-le|-la| le| la)? plus|"
                        r"réécris(?:-le|-la)?|reformule(?:-le|-la)?|améliore(?:-le|-la)?|corrige(?:-le|-la)?|"
                        r"raccourcis(?:-le|-la)?|ajoute|enlève|supprime|modifie|rends(?:-le|-la| le| la)?|"
                        r"simplifie(?:-le|-la)?)\b[^?\"]{0,60}$",
        "de_bare_edit": r"^\W*(?:jetzt |bitte |kannst du )?(?:mach(?:e)? (?:es|das|ihn|sie|den text) \w+|"
                        r"schreib(?:e)? (?:es|das|ihn|sie) (?:\w+ )?(?:um|neu|\w+er)|verbessere|korrigiere|kürze|ändere|"
                        r"füge|entferne|formuliere|vereinfache)\b[^?\"]{0,60}$",
        "pt_bare_edit": r"^\W*(?:agora |por favor,? |pode )?(?:faça(?:-o|-a)? mais|reescreva|melhore|corrija|encurte|resuma|"
                        r"adicione|acrescente|remova|mude|altere|troque|simplifique)\b[^?\"]{0,60}$",
        # Again, another one, redo (a short turn, or the phrase said of "it"/"this").
        "zh_redo": r"^.{0,8}(?:再来一?(?:个|次|遍)|重来|再试一?(?:次|下)|另(?:外)?(?:写)?一(?:个|种|篇|首|版)|换个(?:说法|方式|写法|角度))"
                   r"[^?？吗么\n]{0,6}$|^.{0,4}(?:还有|有没有|有)(?:其他|别的|更(?:简单|好|短)的)(?:方法|办法|方案|写法|版本|例子|答案)"
                   r"[^\n]{0,6}$",
        "ru_redo": r"^\W*(?:а |и |ну |нет,? )?(?:заново|по-другому|иначе|давай (?:ещё|еще|снова|другой|другую|другое|по-другому))\b"
                   r"[^?]{0,40}$|\b(?:напиши|сделай|перепиши|расскажи|придумай) (?:заново|по-другому|иначе)\b",
        "fr_es_de_pt_redo": r"^\W*(?:(?:encore|autre chose|une autre|essaie encore|réessaie|otra|otra opción|otro ejemplo|"
                            r"inténtalo de nuevo|hazlo de nuevo|vuelve a intentarlo|eine andere|andere beispiele|versuch(?:e)? es "
                            r"(?:noch ?mal|erneut)|anders|outra|outra opção|outro exemplo|tente (?:novamente|de novo)|"
                            r"faça de novo)(?: (?:por favor|s'il te pla[iî]t|bitte|please))?)\W*$",
        "ar_ja_redo": r"[أاإ]عد (?:كتابة|صياغة|المحاولة|الكتابة)|[أا]عد كتابت|حاول مرة [أا]خرى|^\W*مرة [أا]خرى\W*$|^\W*(?:غيره|غيرها|بديل)\W*$|"
                      r"書き直して|やり直して|もう一度(?:書いて|作って|お願い)?(?:します|ください)?\W*$|別の(?:案|例|もの|バージョン|言い方)",
        # Edits of the answer in Arabic and Japanese: shorter, simpler, in Arabic / Japanese.
        "ar_ja_edit": r"^\W*(?:اختصر|اختصرها|اختصره|باختصار|[أا]قصر|[أا]بسط|بشكل مختصر|بالعربي|بالعربية|باللغة العربية)[^؟?]{0,30}$|"
                      r"^.{0,6}(?:もっと|もう少し)?(?:短く|簡潔に|簡単に|分かりやすく|わかりやすく|丁寧に|長く)(?:して|書いて|まとめて|お願い)?"
                      r"[^?？か]{0,10}$|^\W*日本語で(?:お願い|書いて|答えて)?(?:します)?\W*$",
    },
    "Factual_Error": {
        "zh_wrong": r"不对|错了|不正确|不准确|瞎说|胡说|瞎猜|乱说|你确定|是真的吗|还是(?:报错|不行|不对|错|一样|没用)|(?:依然|仍然)(?:报错|不行)",
        "ru_wrong": r"\b(?:неправильно|неверно|неправда|ошибаешься|ошибаетесь|это не так)\b|\b(?:ты|вы) уверен\w*|\bвс[её] равно (?:ошибка|не работает)|\bне работает\b",
        "other_still": r"怎么还是|还是没(?:有)?(?:变|改|用|解决)|又错了|\b(?:опять|снова) (?:не|ошибка|то же)\b|"
                       r"\b(?:sigue sin funcionar|sigue (?:igual|mal)|toujours pas|ça ne marche toujours pas|immer noch (?:nicht|falsch|"
                       r"der gleiche fehler)|ainda não (?:funciona|está certo))\b",
        "fr_es_de_pt_wrong": r"\b(?:c'est faux|c'est incorrect|pas correct|tu te trompes|es-tu sûr|tu es sûr|ne (?:marche|fonctionne) pas|está mal|es incorrecto|no es correcto|te equivocas|estás seguro|no funciona|das ist falsch|stimmt nicht|bist du sicher|funktioniert nicht|está errado|está incorreto|tem certeza|não funciona)\b",
        "sure_other": r"^\W*(?:¿\s*)?(?:seguro|estás segur[oa]|sicher|vraiment|t'es sûr|sério|certeza)\s*[?？]|"
                      r"^\W*(?:но |а )?разве\b|(?:不是|难道)[^?？]{1,20}吗[?？]?$|^(?:不对[，,]?)?应该是",
        # "you're wrong", "that's not true", "still doesn't work", "where did you get that".
        "zh_challenge": r"不是这样|根本不是|并不是这样|你(?:又)?(?:说|写|算|搞|弄|理解)错|有误|没有(?:这个|这种)(?:选项|函数|方法|按钮|属性|"
                        r"模块|参数|命令|设置)|不起作用|不管用|没(?:有)?(?:效果|反应)|运行不了|跑不起来|还是(?:报|出)错|(?:依然|仍然|还是)"
                        r"(?:没有|不能|无法)|(?:拉取|下载|安装|找|装|打|运行|启动|编译|导入|加载|连接|登录|访问)不(?:到|了|上|开|起来)",
        "ru_challenge": r"\b(?:ты ошиб(?:ся|лась)|вы ошиблись|ты не прав|вы не правы|неверный ответ|не верно|откуда ты (?:это )?взял|"
                        r"ты (?:всё |это )?(?:выдумал|придумал|сочинил)|та же (?:самая )?ошибка|не сработало|ничего не (?:изменилось|"
                        r"поменялось|происходит)|вс[её] (?:ещё|еще) (?:не работает|ошибка|та же))\b|^\W*(?:нет,? )?(?:но |а )?на самом деле\b",
        "fr_es_de_pt_challenge": r"\b(?:ce n'est pas (?:vrai|correct|juste|exact)|c'est pas (?:vrai|correct|juste)|tu as tort|vous avez tort|"
                                 r"tu t'es trompé|ça ne marche pas|êtes-vous sûr|no es (?:correcto|cierto|verdad|así)|estás equivocado|"
                                 r"sigue (?:sin|dando|saliendo) \w+|nicht richtig|nicht korrekt|du irrst dich|das stimmt so nicht|"
                                 r"(?:geht|klappt) (?:immer noch )?nicht|não (?:está|é) (?:certo|correto|verdade)|você errou|"
                                 r"continua (?:dando|sem funcionar|com erro))\b|^\W*(?:faux|falsch|errado|incorrecto|incorrect)\W*$",
        "ar_ja_challenge": r"(?:^|\s)(?:هذا|هذه|الاجابة|الإجابة|كلامك|جوابك)\s+(?:خط[أا]|غلط|غير صحيح|ليس صحيحا?|ليست صحيحة)|"
                           r"^\W*(?:خط[أا]|غلط|غير صحيح|ليس صحيحا?)\W*$|هل [أا]نت متأكد|متأكد\s*[؟?]|"
                           r"違います|違う(?:よ|でしょ|って)|間違って(?:いる|います|る)|間違いです|正しくない|本当(?:に|ですか)\s*[?？]|"
                           r"まだ(?:エラー|動かない|動きません|同じ)|動きません|動かない",
    },
    "Ignored": {
        "zh_ignored": r"我(?:问|说)的是|不是这个|我的意思是|答非所问|你没(?:有)?(?:回答|理解)",
        "ru_ignored": r"^\W*(?:но |а |нет,? )?я (?:же )?(?:просил|спрашивал)\b[^?]{0,60}$|\bя же (?:просил|спрашивал)\b|\bя имел в виду\b|\bне то,? что я\b|\bты не (?:ответил|понял)\b",
        "fr_es_de_pt_ignored": r"\b(?:ce n'est pas ce que|je voulais dire|tu as (?:omis|oublié)|no es lo que|quise decir|das ist nicht,? was|ich meinte|não foi isso|eu quis dizer)\b",
        "other_told_you": r"不是让你|我(?:刚才|已经)?(?:说|讲)了|我要的是|我是说|没有按照|你没有?(?:按|照|看|理解|回答)|"
                          r"\bя же (?:сказал|говорил|писал)|\bя (?:сказал|просил|писал),? (?:что|чтобы)\b|"
                          r"\b(?:te (?:pedí|dije)|dije que|je t'ai (?:demandé|dit)|ich habe (?:dich|dir) (?:gebeten|gesagt)|"
                          r"eu (?:pedi|disse) (?:para|que))\b",
        # "No, I meant ...", "that's not what I asked", "you didn't understand".
        "zh_misread": r"我不是(?:问|说|要|让|想)|你(?:理解错|误会)了|你没(?:有)?(?:看|明白|听懂|看懂)|^\W*不是[^，,。？?]{1,12}[，,]\s*(?:而)?是|"
                      r"^\W*(?:我)?(?:需要|想要|要求)的是",
        "ru_misread": r"\bнет,? я (?:имел|имела|хотел|хотела|просил|просила|спрашивал|спрашивала|говорил|говорила)\b|\bне об этом\b|"
                      r"\bты (?:меня )?не так понял|\bя (?:не )?(?:это|об этом) не (?:спрашивал|просил)|\bя не (?:просил|спрашивал)\b|"
                      r"\bвопрос был (?:о|про|в)\b",
        "fr_es_de_pt_misread": r"\b(?:non,? je (?:parlais|voulais|veux|demandais|parle)|tu n'as pas (?:compris|répondu)|je parle de|"
                               r"je ne t'ai pas demandé|me refería|no me (?:entendiste|refería)|no entendiste|no te (?:pregunté|pedí)|"
                               r"nein,? ich (?:meinte|meine|wollte|habe gefragt)|du hast (?:mich )?(?:nicht|falsch) verstanden|"
                               r"das war nicht (?:die frage|gemeint)|não,? (?:eu )?(?:quero dizer|perguntei|pedi|queria)|"
                               r"você não (?:entendeu|respondeu)|ik bedoel(?:de)?)\b",
        "ar_ja_misread": r"(?:لم|ما) (?:[أا]طلب|[أا]س[أا]ل|قلت)|ليس هذا ما|مش هذا|[أا]نا (?:س[أا]لت|طلبت|قصدت)|قصدي|(?:^|\s)[أا]قصد\b|قصدت|"
                         r"لم تفهم|そうじゃなくて|そうではなく|そういう意味(?:じゃ|では)ない|聞いているのは|質問に答えて",
    },
    "Insufficient_Detail": {
        "zh_detail": r"详细(?:一点|一些|点|说|讲|解释|介绍)|具体(?:一点|一些|点|说)|展开(?:说|讲)|多(?:写|说)一些|更详细",
        "other_not_enough": r"不够(?:详细|具体|完整|全面|深入)|太(?:简单|简略|笼统|短|少)了|"
                            r"\b(?:недостаточно (?:подробно|полно)|слишком (?:коротко|кратко|просто|обще))\b|"
                            r"\b(?:muy corto|demasiado corto|trop court|zu kurz|muito curto)\b",
        "ru_detail": r"\bподробнее\b|\bболее подробно\b|\bрасскажи больше\b",
        "fr_es_de_pt_detail": r"\b(?:plus de détails|plus détaillé|más detalles|más detallado|explica mejor|mehr details|ausführlicher|mais detalhes|explique melhor)\b",
        # More detail, said as a short turn (the same words open new tasks: "développe une application").
        "ru_more_detail": r"\b(?:поподробнее|подробней|детальнее|развёрнуто|развернуто|развёрнутее|развернутее)\b|"
                          r"^\W*(?:мало|маловато|раскрой (?:тему|подробнее|больше))\W*$|\bраспиши (?:подробн\w*|по каждому|каждый|каждую|по пунктам)|"
                          r"\bпо каждому (?:пункт\w*|шагу)\b|^.{0,6}扩写.{0,6}$",
        # Bare verbs ("développe", "amplía") only as the whole turn: with an object they start a new task.
        "fr_es_de_pt_more_detail": r"^\W*(?:peux-tu |pouvez-vous |puedes |podrías |kannst du |pode )?(?:(?:développe|détaille|"
                                   r"approfondis)(?:-le|-la|-les| davantage| plus| un peu(?: plus)?)?|amplía(?:lo|la)?|desarrolla(?:lo|la)?"
                                   r"(?: más)?|profundiza|genauer|detaillierter|aprofunde|desenvolva)\W*$|"
                                   r"^\W*(?:peux-tu |pouvez-vous |puedes |podrías |kannst du |pode )?(?:explique (?:mieux|davantage|plus)|"
                                   r"sois plus (?:précis|détaillé)|plus précis|explica más|sé más específico|más específico|erkläre? "
                                   r"(?:das |es )?(?:genauer|besser|ausführlicher|detaillierter)|mais detalhado|mais específico|"
                                   r"detalhe mais|explique mais)\b[^?]{0,40}$",
        "ar_ja_more_detail": r"^[^\n]{0,25}(?:بالتفصيل|بتفصيل|بشكل (?:مفصل|[أا]وسع)|[أا]كثر تفصيلا?|اشرح (?:[أا]كثر|بشكل [أا]فضل)|"
                             r"وضح (?:[أا]كثر|[أا]فضل))[^\n]{0,25}$|^.{0,6}(?:もっと|より)?(?:詳しく|具体的に|詳細に)[^?？か]{0,12}$",
    },
    "Style": {
        "zh_style": r"简短(?:一点|一些|点)|(?:更|再)(?:简洁|简短|短)|太长了?|(?:短|长|简单|通俗|正式|口语化|专业)一(?:点|些)",
        "ru_style": r"\b(?:короче|покороче|слишком длинно|проще)\b",
        "fr_es_de_pt_style": r"^\W*(?:(?:c'est|es|ist|é|está|mach es|hazlo|fais-le|faça) )?(?:plus court|plus courte|trop long|más corto|más largo|demasiado largo|kürzer|länger|zu lang|mais curto|mais longo|muito longo)\b",
        # Length, tone, language of the answer, as a short turn.
        "ru_fr_es_de_pt_style": r"^\W*(?:(?:сделай|напиши) )?(?:попроще|понятнее|кратко|лаконичнее|более (?:кратко|просто|формально))\W*$|"
                                r"\bслишком (?:длинно|сложно|формально|много|заумно)\b|"
                                r"^\W*(?:(?:c'est|es|ist|é|está) )?(?:trop (?:long|compliqué|formel)|plus (?:simple|concis|formel|clair)|"
                                r"más (?:breve|sencillo|simple|formal|conciso)|menos formal|demasiado (?:largo|formal|complicado)|"
                                r"einfacher|formeller|knapper|zu (?:kompliziert|formell)|mais (?:simples|formal|resumido|breve)|"
                                r"menos formal)(?: (?:por favor|s'il te pla[iî]t|bitte|please))?\W*$",
    },}

# How sure a verdict from each pattern is (default 0.85 by polarity, see `stages.wildfeedback_cues.CONFIDENCE`):
# bare edits and the forms that also occur in neutral turns are less sure (rules+llm sends them to the model).
INTL_CONFIDENCE: dict[str, float] = {
    "zh_ok": 0.7, "ru_ok": 0.7, "fr_es_de_pt_ok": 0.7, "ar_ja_ok": 0.7, "zh_more": 0.7, "zh_it": 0.7,
    "ru_bare_edit": 0.7, "es_bare_edit": 0.7, "fr_bare_edit": 0.7, "de_bare_edit": 0.7, "pt_bare_edit": 0.7,
    "sure_other": 0.7, "other_told_you": 0.75, "other_not_enough": 0.75, "other_still": 0.8,
    "other_in_language": 0.75, "de_should": 0.7, "zh_again": 0.75, "zh_edit": 0.7, "ru_edit": 0.75, "ru_again": 0.75,
    "zh_style": 0.75, "ru_style": 0.7, "zh_redo": 0.75, "ru_redo": 0.75, "fr_es_de_pt_redo": 0.75, "ar_ja_redo": 0.75,
    "ar_ja_edit": 0.75, "zh_verdict": 0.75, "ru_verdict": 0.75, "fr_es_de_pt_verdict": 0.75, "ar_ja_verdict": 0.7,
    "zh_misread": 0.75, "ru_misread": 0.75, "fr_es_de_pt_misread": 0.75, "ar_ja_misread": 0.75,
    "ru_more_detail": 0.75, "fr_es_de_pt_more_detail": 0.75, "ar_ja_more_detail": 0.75, "ru_fr_es_de_pt_style": 0.75,
    "zh_challenge": 0.75, "ru_challenge": 0.75, "fr_es_de_pt_challenge": 0.8, "ar_ja_challenge": 0.8,
}
