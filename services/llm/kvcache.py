"""The running batch's KV cache: one preallocated, left-padded buffer per layer.

Rows are sequences, columns are cache positions shared by all rows; a row's real tokens sit at
the right end of the used span `[start, end)` and `mask` marks them. A decode step writes every
layer's new key/value into column `end` in place (no per-step concatenation), sequences join by
copying their prefilled cache into a rebuilt buffer (padded on the left to the common length) and
leave by row selection; leading columns no row uses are dropped by moving `start`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer


class _SlotLayer(DynamicLayer):
    """One layer's view of the batch buffers, in the interface the model's attention calls."""

    def __init__(self, batch: "BatchKV", layer: int) -> None:
        super().__init__()
        self._batch = batch
        self._layer = layer
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return self._batch.write(self._layer, key_states, value_states)

    def get_seq_length(self) -> int:
        return self._batch.end - self._batch.start


class BatchKV:
    """KV buffers, validity mask and next position of every row of the running batch."""

    def __init__(self, num_layers: int, block: int = 128) -> None:
        self.num_layers = num_layers
        self.block = block
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.mask = torch.zeros(0, 0, dtype=torch.bool)
        self.positions = torch.zeros(0, dtype=torch.long)
        self.start = 0
        self.end = 0
        self.cache = Cache(layers=[_SlotLayer(self, i) for i in range(num_layers)])

    @property
    def rows(self) -> int:
        return int(self.positions.shape[0])

    @property
    def capacity(self) -> int:
        return int(self.mask.shape[1])

    def write(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = key.shape[2]
        self.keys[layer][:, :, self.end:self.end + q] = key
        self.values[layer][:, :, self.end:self.end + q] = value
        return (self.keys[layer][:, :, self.start:self.end + q], self.values[layer][:, :, self.start:self.end + q])

    def step_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(4-D attention mask, position ids) for one decode step; call `advance` after the forward."""
        if self.end >= self.capacity:
            self._reallocate(self.rows, self.end - self.start + self.block)
        self.mask[:, self.end] = True
        return self.mask[:, None, None, self.start:self.end + 1], self.positions.unsqueeze(1)

    def advance(self) -> None:
        self.end += 1
        self.positions += 1

    def keep(self, rows: Sequence[int]) -> None:
        """Keep only `rows` (in this order); drop columns no remaining row uses."""
        if len(rows) == self.rows:
            return
        if not rows:
            self.clear()
            return
        index = torch.tensor(rows, dtype=torch.long)
        on_device = index.to(self.keys[0].device)
        self.keys = [k.index_select(0, on_device) for k in self.keys]
        self.values = [v.index_select(0, on_device) for v in self.values]
        self.mask = self.mask.index_select(0, index)
        self.positions = self.positions.index_select(0, index)
        used = self.mask[:, self.start:self.end].any(dim=0).nonzero()
        if used.numel():
            self.start += int(used[0])

    def clear(self) -> None:
        self.keys, self.values = [], []
        self.mask = torch.zeros(0, 0, dtype=torch.bool)
        self.positions = torch.zeros(0, dtype=torch.long)
        self.start = self.end = 0

    def join(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor], mask: torch.Tensor) -> None:
        """Append prefilled rows (per-layer [rows, heads, length, dim], left-padded per `mask`)."""
        new_rows, length = mask.shape
        span = max(self.end - self.start, length)
        capacity = span + self.block
        old_rows = self.rows
        template = keys[0]
        shape = (old_rows + new_rows, template.shape[1], capacity, template.shape[3])
        new_keys, new_values = [], []
        for layer in range(self.num_layers):
            k = template.new_zeros(shape)
            v = template.new_zeros(shape)
            if old_rows:
                k[:old_rows, :, span - (self.end - self.start):span] = self.keys[layer][:, :, self.start:self.end]
                v[:old_rows, :, span - (self.end - self.start):span] = self.values[layer][:, :, self.start:self.end]
            k[old_rows:, :, span - length:span] = keys[layer]
            v[old_rows:, :, span - length:span] = values[layer]
            new_keys.append(k)
            new_values.append(v)
        new_mask = torch.zeros(old_rows + new_rows, capacity, dtype=torch.bool)
        if old_rows:
            new_mask[:old_rows, span - (self.end - self.start):span] = self.mask[:, self.start:self.end]
        new_mask[old_rows:, span - length:span] = mask.cpu()
        self.positions = torch.cat([self.positions, mask.sum(dim=1).to(torch.long)])
        self.keys, self.values, self.mask = new_keys, new_values, new_mask
        self.start, self.end = 0, span

    def _reallocate(self, rows: int, capacity: int) -> None:
        used = self.end - self.start
        for layer in range(self.num_layers):
            for buffers in (self.keys, self.values):
                old = buffers[layer]
                new = old.new_zeros((rows, old.shape[1], capacity, old.shape[3]))
                new[:, :, :used] = old[:, :, self.start:self.end]
                buffers[layer] = new
        mask = torch.zeros(rows, capacity, dtype=torch.bool)
        mask[:, :used] = self.mask[:, self.start:self.end]
        self.mask = mask
        self.start, self.end = 0, used
