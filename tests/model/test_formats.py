"""Prompt formats, the chat template and the text mask from character offsets."""

from gritkit.model.formats import GritFormat, text_token_mask


def test_embedding_prompt_formats_are_byte_exact():
    fmt = GritFormat()
    assert fmt.embedding_prompt("hello", "Find it") == ("<|user|>\nFind it\n<|embed|>\nhello", 27)
    assert fmt.embedding_prompt("hello") == ("<|embed|>\nhello", 10)


def test_text_mask_excludes_special_and_prefix_tokens_and_keeps_straddling_ones():
    # BOS (empty span), two prefix tokens, one token straddling the boundary, one text token.
    offsets = [(0, 0), (0, 4), (4, 6), (6, 9), (9, 12)]
    assert text_token_mask(offsets, text_start=7) == [False, False, False, True, True]


def test_mask_from_offsets_survives_a_token_merged_across_the_boundary(tokenizer):
    # "ab" tokenised alone and "b" as the start of the text may merge into one token; the mask
    # must still cover exactly the tokens that carry text characters.
    fmt = GritFormat(embed_without_instruction="prefix:")
    prompt, start = fmt.embedding_prompt("the text")
    encoded = tokenizer(prompt, return_offsets_mapping=True)
    mask = text_token_mask(encoded["offset_mapping"], start)
    covered = "".join(prompt[s:e] for (s, e), keep in zip(encoded["offset_mapping"], mask) if keep)
    assert covered.endswith("the text") and len(covered) - len("the text") < 8


def test_chat_template_renders_the_grit_format(tokenizer):
    messages = [{"role": "user", "content": "U1"}, {"role": "assistant", "content": "A1"},
                {"role": "user", "content": "U2"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<s><|user|>\nU1\n<|assistant|>\nA1</s>\n<|user|>\nU2\n<|assistant|>\n"


def test_instruction_is_the_text_before_a_blank_line_else_the_first_sentence():
    from gritkit.model.formats import instruction_length

    content = "Summarise this package description in one line.\n\nA long description. More."
    assert content[:instruction_length(content)] == "Summarise this package description in one line.\n\n"
    assert "What is len? It counts."[:instruction_length("What is len? It counts.")] == "What is len? "
    assert instruction_length("no sentence end") == len("no sentence end")


def test_fit_cuts_the_end_of_each_cuttable_run_earliest_first_and_never_the_answer():
    from gritkit.model.formats import fit_to_length

    #        0  1  2  3  4  5  6  7  8  9
    ids = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19]
    trained = [False] * 8 + [True] * 2
    cuttable = [False, True, True, True, False, True, True, False, False, False]
    assert fit_to_length(ids, trained, cuttable, 10) == (ids, trained, "kept")
    assert fit_to_length(ids, trained, cuttable, 8) == ([10, 11, 14, 15, 16, 17, 18, 19], [False] * 6 + [True] * 2,
                                                         "shortened")
    assert fit_to_length(ids, trained, cuttable, 5) == ([10, 14, 17, 18, 19], [False] * 3 + [True] * 2, "shortened")
    # nothing left to cut in the prompt: the answer loses its end, kept while half of it remains
    long_answer = [False] * 4 + [True] * 6
    assert fit_to_length(ids, long_answer, [False] * 10, 7) == (ids[:7], long_answer[:7], "answer_cut")
    assert fit_to_length(ids, long_answer, [False] * 10, 6) == ([], [], "dropped")
    assert fit_to_length(ids, [True] * 10, [False] * 10, 2, min_answer_share=0.0) == (ids[:2], [True] * 2, "answer_cut")
