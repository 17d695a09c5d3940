"""Prompt templates and decode-loop helpers: pure logic, no model."""
import pytest
import torch

from mtl.decoding import choose_next_tokens, find_stop, holdback_length, normalize_stops, top_p_filter
from mtl.prompts import PromptError, build_messages, render_chatml, validate_messages


def test_summarize_template_puts_the_text_in_the_user_message():
    messages = build_messages("summarize", {"text": "  Stocks rose on Monday.  "})
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "Stocks rose on Monday." in messages[1]["content"]
    assert "Summarize" in messages[1]["content"]
    assert build_messages("summarize", "Stocks rose on Monday.") == messages


def test_answer_template_with_and_without_context():
    with_context = build_messages("answer", {"question": "Who won?", "context": "Arsenal won 2-0."})
    assert "Context:\nArsenal won 2-0." in with_context[1]["content"]
    assert with_context[1]["content"].endswith("Question: Who won?")
    bare = build_messages("answer", {"question": "Who won?"})
    assert bare[1]["content"] == "Question: Who won?"
    assert build_messages("answer", "Who won?") == bare
    assert build_messages("answer", {"question": "Who won?", "context": "   "}) == bare


def test_chat_messages_pass_through_and_accept_text_parts():
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]}]
    assert build_messages("chat", messages) == [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": "Hi there"}]
    assert build_messages("chat", {"messages": messages}) == build_messages("chat", messages)


@pytest.mark.parametrize("task, inputs, fragment", [
    ("summarize", {"text": ""}, "empty"),
    ("summarize", {"text": 3}, "must be a string"),
    ("answer", {"context": "x"}, "'question'"),
    ("chat", [], "non-empty list"),
    ("chat", [{"role": "robot", "content": "x"}], "role"),
    ("chat", [{"role": "user", "content": 5}], "content must be a string"),
    ("chat", [{"role": "user", "content": [{"type": "image_url"}]}], "only text parts"),
    ("chat", [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "last message"),
    ("poem", "x", "unknown generative task"),
    ("translate", {"text": "Bonjour"}, "'target'"),
    ("translate", "Bonjour", "'text'"),
    ("code", {"instruction": " "}, "empty"),
])
def test_bad_inputs_raise_prompt_error_naming_the_problem(task, inputs, fragment):
    with pytest.raises(PromptError, match=fragment):
        build_messages(task, inputs)


def test_translate_and_code_templates_name_their_languages():
    system, user = build_messages("translate", {"text": "Good morning", "target": "French", "source": "English"})
    assert system["role"] == "system" and "translation only" in system["content"]
    assert user["content"] == "Translate the following text from English to French.\n\nText:\nGood morning"
    (_, anywhere) = build_messages("translate", {"text": "Hola", "target": "German"})
    assert anywhere["content"].startswith("Translate the following text to German.")
    (_, code) = build_messages("code", {"instruction": "reverse a list", "language": "Python"})
    assert code["content"] == "Write Python code for this task:\nreverse a list"
    assert build_messages("code", "sort numbers")[1]["content"] == "Write code for this task:\nsort numbers"


def test_render_chatml_matches_smollm2_format():
    text = render_chatml(validate_messages([{"role": "user", "content": "Hi"}]))
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_find_stop_returns_the_earliest_match():
    assert find_stop("one. two\nthree", ["\n", "."]) == 3
    assert find_stop("abc", ["x"]) is None
    assert find_stop("a.b.c", ["."], search_from=2) == 3
    assert find_stop("abc", [""]) is None


def test_holdback_keeps_stop_prefixes_and_partial_characters():
    assert holdback_length("Hello wor", ["world"]) == 3
    assert holdback_length("Hello", ["\n\n"]) == 0
    assert holdback_length("Hello\n", ["\n\n"]) == 1
    assert holdback_length("caf\ufffd", []) == 1
    assert holdback_length("abc", []) == 0


def test_normalize_stops():
    assert normalize_stops(None) == ()
    assert normalize_stops("\n") == ("\n",)
    assert normalize_stops(["a", "", "b"]) == ("a", "b")


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    kept = top_p_filter(probs, 0.7)
    assert torch.allclose(kept, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    assert top_p_filter(probs, 0.01)[0] == 1.0  # the top token always survives


def test_greedy_rows_take_argmax_and_seeded_rows_repeat():
    logits = torch.tensor([[0.0, 3.0, 1.0], [0.0, 0.1, 0.2]])
    greedy = choose_next_tokens(logits.clone(), [0.0, 0.0], [1.0, 1.0], [None, None])
    assert greedy.tolist() == [1, 2]

    def draw(seed):
        gens = [None, torch.Generator().manual_seed(seed)]
        return [choose_next_tokens(logits.clone(), [0.0, 1.5], [1.0, 1.0], gens)[1].item() for _ in range(1)]

    assert draw(7) == draw(7)
    samples = {choose_next_tokens(logits.clone(), [0.0, 5.0], [1.0, 1.0],
                                  [None, torch.Generator().manual_seed(s)])[1].item() for s in range(40)}
    assert samples == {0, 1, 2}  # a hot temperature reaches every token
