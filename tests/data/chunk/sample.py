"""Inventory helpers."""
import os
from dataclasses import dataclass

DEFAULT_LIMIT = 10


@dataclass
class Item:
    name: str
    count: int = 0


class Inventory(Base):
    """A bag of items."""

    kind = "inventory"

    def __init__(self, items=None):
        self.items = list(items or [])

    # Add an item, merging counts.
    def add(self, item):
        for it in self.items:
            if it.name == item.name:
                it.count += item.count
                return it
        self.items.append(item)
        return item

    @property
    def total(self):
        return sum(it.count for it in self.items)


def load(path):
    with open(path) as f:
        return Inventory(Item(l.strip()) for l in f)


if __name__ == "__main__":
    print(load(os.sys.argv[1]).total)
