"""The VLM answer parser on realistic broken answers (formats seen in the source documents)."""

from __future__ import annotations

import pytest

from pipeline.vlm.parser import classify_judgement, clean_answer, parse_answer

COLS = [str(i) for i in range(1, 10)]
ROWS = ["U", "C", "D"]

# (answer, judgement, positions, mode)
CASES = [
    # 1. the contract, exactly
    (
        "- image type->CYLN_DST\n- number of pins->27 pins\n- your judgement->defective\n"
        "- defect mode->bent\n- defect position->X:3, Y:C",
        "defect",
        [("3", "C")],
        "bent",
    ),
    # 2. pass, contract
    (
        "- image type->CYLN_RAW\n- number of pins->27 pins\n- your judgement->passed\n"
        "- defect mode->none\n- defect position->none",
        "pass",
        [],
        None,
    ),
    # 3. Llama chat residue with the echoed prompt (the seeds' eliminate_prompt case)
    (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>You are a visual "
        "inspector who judges whether a product is passed or defective.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n- image type->CYLN_DST\n"
        "- number of pins->27 pins\n- your judgement->defective\n- defect mode->missing\n"
        "- defect position->X:7, Y:U<|eot_id|>",
        "defect",
        [("7", "U")],
        "missing",
    ),
    # 4. Qwen residue
    (
        "<|im_start|>assistant\n- image type->CYLN_DST\n- your judgement->passed\n"
        "- defect position->none<|im_end|>\n<|endoftext|>",
        "pass",
        [],
        None,
    ),
    # 5. a bare "assistant" header line
    (
        "assistant\n\nyour judgement: Defective\ndefect position: X:1, Y:D",
        "defect",
        [("1", "D")],
        None,
    ),
    # 6. upper case, spaces around the arrow, lower-case row
    (
        "- IMAGE TYPE -> CYLN_DST\n- YOUR JUDGEMENT -> DEFECTIVE\n"
        "- DEFECT POSITION -> X : 5 , Y : c",
        "defect",
        [("5", "C")],
        None,
    ),
    # 7. keys in another order, colon separators
    (
        "Defect position: X:9, Y:U\nDefect mode: foreign matter\nJudgement: defective\n"
        "Image type: CYLN_DST",
        "defect",
        [("9", "U")],
        "foreign matter",
    ),
    # 8. markdown bullets and bold
    (
        "**Inspection result**\n* **Image type**: CYLN_DST\n* **Your judgement**: **defective**\n"
        "* **Defect mode**: bent pin\n* **Defect position**: `X:4, Y:C`",
        "defect",
        [("4", "C")],
        "bent pin",
    ),
    # 9. compact "X3 YC"
    ("- your judgement->defective\n- defect position->X3 YC", "defect", [("3", "C")], None),
    # 10. "X:3,Y:C" without spaces, plus an arrow written as unicode
    ("- your judgement→defective\n- defect position→X:3,Y:C", "defect", [("3", "C")], None),
    # 11. "3C"
    ("judgement: NG\nposition: 3C", "defect", [("3", "C")], None),
    # 12. "position (3, C)"
    ("The product is defective. Defect position (3, C).", "defect", [("3", "C")], None),
    # 13. several positions
    (
        "- your judgement->defective\n- defect mode->bent\n- defect position->X:3, Y:C; X:5, Y:U "
        "and X:9, Y:D",
        "defect",
        [("3", "C"), ("5", "U"), ("9", "D")],
        "bent",
    ),
    # 14. everything on one line
    (
        "- image type->CYLN_DST - number of pins->27 pins - your judgement->defective "
        "- defect mode->missing - defect position->X:2, Y:D",
        "defect",
        [("2", "D")],
        "missing",
    ),
    # 15. synonyms: OK
    ("Verdict: OK", "pass", [], None),
    # 16. synonyms: no defect
    ("- your judgement->no defect\n- defect position->N/A", "pass", [], None),
    # 17. synonyms: reject / fail
    ("Result = REJECT\nDefect at X=6 Y=D", "defect", [("6", "D")], None),
    ("- your judgement->fail\n- defect position->X:8, Y:U", "defect", [("8", "U")], None),
    # 19. "not passed" is a defect, "not defective" a pass
    ("your judgement: not passed\ndefect position: X:1, Y:U", "defect", [("1", "U")], None),
    ("your judgement: not defective", "pass", [], None),
    # 21. free text of a chatty model (seeds/003)
    (
        "Upon comparing the two images, it appears that the bottom image shows a product that is "
        "not normal. In the top image all the pins are in the same position. This indicates that "
        "the product in the bottom image is defective.",
        "defect",
        [],
        None,
    ),
    # 22. template echoed instead of answered: unreadable
    (
        "- image type->CYLN_DST\n- number of pins->27 pins\n- your judgement->passed | defective\n"
        "- defect mode->bent\n- defect position->X:3, Y:C",
        None,
        [("3", "C")],
        "bent",
    ),
    # 23. nothing to read
    ("I cannot see the image clearly.", None, [], None),
    # 24. empty
    ("", None, [], None),
    # 25. a position outside the grid is not a cell
    ("- your judgement->defective\n- defect position->X:12, Y:Q", "defect", [], None),
    # 26. the seeds' 1-shot format without a judgement line: mode + cell mean defect
    (
        "- image type->CYLN_DST\n- number of pins->27 pins\n- defect mode->bent\n"
        "- defect position->X:3, Y:U",
        "defect",
        [("3", "U")],
        "bent",
    ),
    # 27. "passed" together with a defect cell contradicts itself
    ("- your judgement->passed\n- defect position->X:4, Y:D", None, [("4", "D")], None),
    # 28. row before column, worded
    ("judgment: defective\nlocation: row C, column 7", "defect", [("7", "C")], None),
    # 29. Y first
    ("your judgement->defective\ndefect position->Y:D, X:2", "defect", [("2", "D")], None),
    # 30. lowercase judgement "pass" with trailing period and Mistral residue
    ("[/INST] - your judgement->pass.\n- defect position->none</s>", "pass", [], None),
    # 31. good with Phi residue
    ("<|assistant|>\nJudgement: good<|end|>", "pass", [], None),
    # 32. numbered list
    (
        "1. Image type: CYLN_RAW\n2. Quantity of pins: 27\n3. Judgement: Defective\n"
        "4. Defect mode: Bent\n5. Defect position: X:6, Y:C",
        "defect",
        [("6", "C")],
        "Bent",
    ),
]


@pytest.mark.parametrize(("answer", "judgement", "positions", "mode"), CASES)
def test_parse_broken_answers(answer, judgement, positions, mode):
    p = parse_answer(answer, COLS, ROWS)
    assert p.judgement == judgement, p
    assert p.positions == positions, p
    assert p.mode == mode, p
    assert p.raw == answer


def test_at_least_twenty_cases():
    assert len(CASES) >= 20


def test_unreadable_keeps_raw_and_says_why():
    p = parse_answer("¯\\_(ツ)_/¯ <|eot_id|>")
    assert p.judgement is None and p.problem == "no_judgement"
    assert p.raw.endswith("<|eot_id|>")
    p = parse_answer("your judgement: passed or defective")
    assert p.judgement is None and p.problem == "contradiction"


def test_invalid_positions_are_reported_apart():
    p = parse_answer("- your judgement->defective\n- defect position->X:12, Y:Q; X:3, Y:C")
    assert p.positions == [("3", "C")]
    assert p.invalid_positions == ["X:12, Y:Q"]


def test_other_grid_labels():
    cols = ["A", "B", "C", "D"]
    rows = ["1", "2"]
    p = parse_answer("- your judgement->defective\n- defect position->X:c, Y:2", cols, rows)
    assert p.positions == [("C", "2")]
    p = parse_answer("judgement: defective\nposition: B1", cols, rows)
    assert p.positions == [("B", "1")]


def test_image_type_and_count():
    p = parse_answer("- image type->CYLN_DST\n- number of pins->27 pins\n- your judgement->passed")
    assert p.image_type == "CYLN_DST" and p.count == 27 and p.judgement == "pass"


def test_clean_answer_strips_residue():
    t = clean_answer("<|start_header_id|>assistant<|end_header_id|>\n\n**Judgement**: ok<|eot_id|>")
    assert t == "Judgement: ok"


def test_classify_judgement_recipe_words():
    assert classify_judgement("GUT", pass_word="gut", defect_word="schlecht") == {"pass"}
    assert classify_judgement("schlecht", pass_word="gut", defect_word="schlecht") == {"defect"}
    assert classify_judgement("no defect found") == {"pass"}
    assert classify_judgement("n.g.") == {"defect"}
