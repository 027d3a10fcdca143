#!/usr/bin/env python3
"""Write the tokenizer test corpus: tools/fixtures/tokenizers/corpus.json (a JSON array of strings).

Deterministic (seeded): hand-written sentences in en/pt/de/fr/ru/ar/zh/ja, code, URLs and edge cases,
plus systematic variants (odd spacing, tabs, newlines inside, numbers, emoji, case, long concatenations).
Run: python3 tools/scripts/tokenizer_corpus.py [out.json]   (needs only the standard library)
"""

import json
import random
import sys
from pathlib import Path

EN = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world!",
    "I can't believe it's already 2024; time flies.",
    "She said, \"Don't worry, we'll be fine.\"",
    "Translation models need clean, well-aligned data.",
    "The meeting starts at 9:30 a.m. on Monday, March 3rd.",
    "Prices rose by 3.5% in the first quarter (Q1).",
    "Why would anyone do that?!",
    "Mr. Smith's dog barked at the mailman's bicycle.",
    "We're testing tokenizers: sentencepiece, BPE, and WordPiece.",
    "It costs $19.99 - or £15, or €17.50.",
    "Once upon a time, there was a little girl named Lily.",
    "Tom and Lily played in the park all day long.",
    "He looked at the sky and saw a big, red balloon.",
    "The cat sat on the mat; the dog sat on the log.",
    "Can you translate this into Portuguese, please?",
    "E-mail me at john.doe@example.com before 5 p.m.",
    "The results (see Table 2) were statistically significant (p < 0.05).",
    "In 1969, Neil Armstrong walked on the Moon.",
    "Rock 'n' roll never dies... or does it?",
    "The patient's temperature was 38.5 °C and rising.",
    "A well-known state-of-the-art model was fine-tuned.",
    "I'd've gone if you'd asked me.",
    "Use the --verbose flag to see more output.",
    "Their café serves crème brûlée and jalapeño poppers.",
    "Naïve coöperation isn't the same as déjà vu.",
]

PT = [
    "Olá, mundo!",
    "O rápido raposa marrom pula sobre o cão preguiçoso.",
    "Não sei se ele virá amanhã à reunião.",
    "A tradução automática melhorou muito nos últimos anos.",
    "Você já comeu pão de queijo em Minas Gerais?",
    "As ações subiram 3,5% no primeiro trimestre.",
    "Ele disse: \"Vamos embora às 18h30.\"",
    "A Fundação de Amparo à Pesquisa do Estado de São Paulo (FAPESP) financiou o projeto.",
    "Coração, ação, informação e educação terminam em -ção.",
    "O preço é R$ 1.234,56 à vista.",
    "Será que vai chover hoje à tarde?",
    "Ontem fomos ao cinema e depois jantamos num restaurante japonês.",
    "Os pássaros cantavam enquanto o sol nascia.",
    "É proibido fumar neste local.",
]

DE = [
    "Guten Morgen! Wie geht es Ihnen?",
    "Die Straße ist wegen Bauarbeiten gesperrt.",
    "Größere Änderungen müssen vorher genehmigt werden.",
    "Donaudampfschifffahrtsgesellschaftskapitän ist ein langes Wort.",
    "Ich möchte ein Glas Wasser, bitte.",
    "Das Treffen findet am 3. Oktober um 14:00 Uhr statt.",
    "Übung macht den Meister.",
    "Der Preis beträgt 12,50 € inkl. MwSt.",
    "Können Sie mir bitte helfen?",
    "Die Bücher liegen auf dem Tisch neben der Tür.",
]

FR = [
    "Bonjour tout le monde !",
    "Où est la bibliothèque, s'il vous plaît ?",
    "L'été dernier, nous sommes allés à la plage.",
    "Ça coûte 15,99 € — c'est très cher !",
    "Les élèves ont réussi l'examen avec brio.",
    "Je n'ai jamais vu une chose pareille.",
    "« Bienvenue », dit-il en souriant.",
    "Il fait beau aujourd'hui ; allons nous promener.",
    "Noël approche et les enfants sont impatients.",
    "Qu'est-ce que c'est que ça ?",
]

RU = [
    "Привет, мир!",
    "Как дела? Всё хорошо, спасибо.",
    "Москва — столица России.",
    "Я люблю читать книги по вечерам.",
    "Цена составляет 1 500 рублей.",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.",
    "Завтра будет дождь и сильный ветер.",
    "Ёлка стоит в углу комнаты.",
]

AR = [
    "مرحبا بالعالم!",
    "كيف حالك اليوم؟",
    "اللغة العربية جميلة جداً.",
    "ذهبت إلى السوق واشتريت بعض الفواكه.",
    "السلام عليكم ورحمة الله وبركاته",
    "العدد ١٢٣ مكتوب بالأرقام العربية.",
    "محمد وأحمد وعلي أصدقاء منذ الطفولة.",
    "كريم",
]

ZH = [
    "你好，世界！",
    "今天天气很好，我们去公园散步吧。",
    "机器翻译的质量在不断提高。",
    "我喜欢吃饺子和面条。",
    "北京是中国的首都。",
    "这本书的价格是三十五元。",
    "他说：“明天见！”",
]

JA = [
    "こんにちは、世界！",
    "今日はとても暑いですね。",
    "私は東京に住んでいます。",
    "カタカナとひらがなと漢字を使います。",
    "ラーメンを食べに行きましょう！",
    "日本語のテキストをトークン化する。",
    "ｶﾀｶﾅの半角文字もあります。",
]

CODE = [
    "def add(a, b):\n    return a + b",
    "for (int i = 0; i < n; ++i) { sum += x[i]; }",
    "fn main() { println!(\"Hello, {}!\", name); }",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "if x != None and len(x) > 0: print(x[0])",
    "const f = (x) => x * 2; // double it",
    "<div class=\"container\"><p>Hello &amp; welcome</p></div>",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null, \"b\": true}}",
    "git commit -m \"Fix bug #123\" && git push origin main",
    "x = np.zeros((3, 4), dtype=np.float32)  # [3, 4]",
    "#include <stdio.h>\nint main(void) { return 0; }",
    "let v: Vec<u32> = (0..10).map(|i| i * i).collect();",
    "$ echo $HOME | sed 's/\\/root/~/g'",
    "a[i] += b[j] * c[k]; /* fused multiply-add */",
    "@decorator\nclass Foo(Bar):\n\tpass",
]

URLS = [
    "https://www.example.com/path/to/page?query=1&lang=pt#section",
    "Visit http://example.org or https://huggingface.co/Helsinki-NLP for details.",
    "ftp://files.example.net/pub/data.tar.gz",
    "See https://en.wikipedia.org/wiki/Machine_translation (accessed 2023-01-15).",
    "My site: www.my-site.co.uk/index.html",
    "mailto:someone@example.com?subject=Hello%20World",
    "https://example.com/a_b-c~d/%E2%9C%93",
]

EDGE = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    " \t \n ",
    "a",
    ".",
    "!!!",
    "???",
    "...",
    "-",
    "--",
    "'",
    "\"\"",
    "   leading spaces",
    "trailing spaces   ",
    "multiple     internal      spaces",
    "tabs\tbetween\twords",
    "line one\nline two\nline three",
    "windows\r\nline endings\r\n",
    "mixed \t\n whitespace \u00a0 nbsp",
    "no-break\u00a0space and\u2009thin\u2009space",
    "ideographic\u3000space",
    "zero\u200bwidth\u200bspace",
    "joiner\u200dzwj and non\u200cjoiner",
    "soft\u00adhyphen",
    "em—dash en–dash minus−sign",
    "“curly quotes” and ‘single’ ones",
    "«guillemets» and ‹single›",
    "ellipsis… and bullet • point",
    "ﬁnancial ﬂow (ligatures)",
    "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "① ② ③ circled digits",
    "x² + y³ = z¹",
    "½ ¼ ¾ fractions",
    "™ © ® symbols",
    "e\u0301 decomposed e-acute vs é composed",
    "A\u030a Angstrom and Å",
    "ﬀ ﬃ ﬄ",
    "Ⅷ roman numeral",
    "㎏ ㎞ ㍻ squared",
    "control\x07bell and\x1bescape",
    "unit\x1fseparator",
    "\ufeffbyte order mark",
    "replacement \ufffd char",
    "emoji 😀😃😄",
    "family 👨‍👩‍👧‍👦 and flag 🇧🇷 🇵🇹",
    "skin tone 👍🏽 thumbs",
    "hearts ❤️ 💕 ♥",
    "math ∀x∈ℝ: x²≥0 ⇒ √x²=|x|",
    "arrows ← → ↑ ↓ ⇄",
    "greek αβγδ ΑΒΓΔ λ",
    "hebrew שלום עולם",
    "hindi नमस्ते दुनिया",
    "thai สวัสดีชาวโลก",
    "korean 안녕하세요 세계",
    "1234567890",
    "3.14159265358979",
    "1,000,000.00",
    "-42 +17 0x1F 0b1010 1e-9",
    "2024-01-15T10:30:00Z",
    "+55 (11) 98765-4321",
    "ISBN 978-3-16-148410-0",
    "</s>",
    "<unk>",
    "<pad>",
    "<s>",
    "a</s>b",
    "before </s> after",
    "x<unk>y<pad>z",
    "</s></s>",
    "<s>hello</s>",
    ">>por<< Hello world",
    ">>pob<< Good morning",
    ">>por<<",
    ">>xx<< unknown code",
    ">>no end marker",
    "a >>por<< in the middle",
    ">>>por<<< odd",
    "<<>>",
    ">>",
    ">",
    "UPPERCASE SENTENCE WITH SHOUTING!",
    "lowercase sentence without punctuation",
    "MiXeD cAsE tExT",
    "Ünïcödé Ëvërÿwhérë",
    "ſ long s and ß sharp s and ẞ capital",
    "Ǆ ǅ ǆ digraphs",
    "İstanbul ıi Iİ",
    "Dotless ı and dotted İ",
    "a" * 300,
    "ab " * 150,
    "😀" * 40,
    "字" * 120,
    ("word " * 200).strip(),
]

EMOJI = ["😀", "🙂", "🚀", "🎉", "👍", "❤️", "🇧🇷", "🤖", "✨", "🔥"]
PUNCT = [".", "!", "?", "...", "?!", ";", ":", ",", " -", " (sic)", "\"", "'", "…", "!!"]
NUMBERS = ["1", "42", "3.14", "1,234", "1.234,56", "10%", "2nd", "1/2", "-7", "100000", "0.001", "19h30"]


def variants(s, rng):
    """Systematic perturbations of one sentence."""
    out = []
    out.append("  " + s + "  ")
    out.append(s.replace(" ", "  "))
    out.append(s.replace(" ", "\t", 1))
    words = s.split(" ")
    if len(words) > 2:
        k = rng.randrange(1, len(words))
        out.append(" ".join(words[:k]) + "\n" + " ".join(words[k:]))
    out.append(s + " " + rng.choice(NUMBERS))
    out.append(rng.choice(EMOJI) + " " + s + " " + rng.choice(EMOJI))
    out.append(s.upper())
    out.append(s.lower())
    out.append(s.rstrip(".!?。！") + rng.choice(PUNCT))
    out.append(s.replace(" ", ""))
    return out


def main():
    out_path = Path(sys.argv[1]) if len(sys.argv) > 1 else (
        Path(__file__).resolve().parents[1] / "fixtures" / "tokenizers" / "corpus.json")
    rng = random.Random(20240601)
    base = EN + PT + DE + FR + RU + AR + ZH + JA + CODE + URLS
    corpus = list(base) + list(EDGE)
    for s in base:
        corpus.extend(variants(s, rng))
    # Mixed-language lines and long lines (concatenations of random base sentences).
    for _ in range(60):
        corpus.append(" ".join(rng.sample(base, 2)))
    for _ in range(25):
        n = rng.randrange(5, 15)
        corpus.append(" ".join(rng.choice(base) for _ in range(n)))
    for _ in range(25):
        corpus.append("\n".join(rng.sample(base, 3)))
    # Random character soup over a mixed alphabet (exercise unknowns and odd adjacency).
    alphabet = "abcXYZ019 .,;:!?'\"()[]{}<>/\\|-_+=*&^%$#@~`éçãñüßøåœæ—–…“”«»€£¥©®™°±×÷" \
        "абвгдеёжз中文字日本語かなカナ한국어עבריתعربي😀🚀\t\n\u00a0\u200b\u3000"
    for _ in range(80):
        n = rng.randrange(1, 40)
        corpus.append("".join(rng.choice(alphabet) for _ in range(n)))
    # Deduplicate, keep order.
    seen = set()
    uniq = []
    for s in corpus:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(uniq, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(uniq)} sentences to {out_path}")


if __name__ == "__main__":
    main()
