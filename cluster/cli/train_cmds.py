"""`mtc train` and `mtc eval` (filled in by the mtl work)."""
