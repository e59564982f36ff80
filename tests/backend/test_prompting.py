"""View-dependent prompting buckets (docs/METHODS.md §1.5): later rules override earlier ones."""

import torch

from backend.priors.prompting import view_buckets, view_prompt


def test_buckets_follow_the_thresholds_in_order():
    el = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 70.0, 70.0, 59.9])
    az = torch.tensor([0.0, 44.9, 45.0, -90.0, 180.0, 0.0, 170.0, -179.0])
    assert view_buckets(el, az) == ["front", "front", "side", "side", "back", "overhead", "overhead", "back"]


def test_thresholds_and_wrapping():
    el = torch.zeros(4)
    az = torch.tensor([29.0, 31.0, 151.0, 360.0 + 10.0])
    assert view_buckets(el, az, front=30.0, back=30.0) == ["front", "side", "back", "front"]


def test_suffixes():
    assert view_prompt("a mug", "back") == "a mug, back view"
    assert view_prompt("a mug", "") == "a mug"
