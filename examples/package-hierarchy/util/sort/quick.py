"""Quicksort, in a package of its own: the worker must import it from the shipped bundle."""

from __future__ import annotations


def quicksort(numbers: list[int]) -> list[int]:
    if len(numbers) <= 1:
        return list(numbers)
    pivot, *rest = numbers
    smaller = quicksort([n for n in rest if n < pivot])
    larger = quicksort([n for n in rest if n >= pivot])
    return [*smaller, pivot, *larger]
