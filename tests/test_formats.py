"""Prompt formats, the chat template and the text mask from character offsets."""

from gritkit.formats import GritFormat, text_token_mask


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
