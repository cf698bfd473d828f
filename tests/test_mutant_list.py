"""The mutation check's list (tests/mutant_list.py) matches the tree: every snippet it breaks
occurs exactly once where it says, and every selection names a test file that exists — so a
change to the code cannot quietly turn a mutant into a no-op. (Running the mutants takes minutes:
``python tests/mutants.py``.)"""
from dataclasses import replace

from mutant_list import MUTANTS
from mutants import check_mutants


def test_every_mutant_still_applies_to_the_tree():
    assert check_mutants(MUTANTS) == []


def test_a_snippet_that_no_longer_occurs_is_reported():
    stale = replace(MUTANTS[0], old="this snippet occurs nowhere\n")
    assert any("occurs 0 times" in problem for problem in check_mutants([stale]))
