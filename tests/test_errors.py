"""errors.require_all_in: the one "refuse what is missing" check, its message built from the absent items."""

from __future__ import annotations

import pytest

from umamba_seg.errors import UserInputError, require_all_in


def test_everything_present_passes():
    require_all_in(("a", "b"), {"a": 1, "b": 2, "c": 3}, lambda absent: f"never {absent}")


def test_absent_items_in_order_name_the_file_and_the_fix():
    with pytest.raises(UserInputError) as info:
        require_all_in(
            ("c", "a", "d", "b"),
            {"a", "b"},
            lambda absent: f"lacks {', '.join(absent)}",
            "plans.json",
            "restore it",
        )
    assert str(info.value) == "error: lacks c, d, plans.json, restore it"
    assert (info.value.where, info.value.fix) == ("plans.json", "restore it")
