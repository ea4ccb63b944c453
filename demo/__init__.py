"""`make demo`: the whole pipeline on the built-in simulator."""
