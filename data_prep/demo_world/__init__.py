"""The embedded default dataset: layout, thermal render and grounded captions."""
