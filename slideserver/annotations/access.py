"""Who may read and write which layer and annotation (the policy row only admits the role).

- admins: everything;
- pathologists: read every layer but other people's personal ones; write their own personal
  and research layers and every case layer; edit their own annotations, and any in a case
  layer or a layer they own;
- researchers: read research layers and layers granted to them; write (their own annotations)
  only to layers granted to them;
- algorithm layers are written by admins (an algorithm's token) only;
- a locked layer is read-only to everyone but admins.
"""

from __future__ import annotations

from dataclasses import dataclass

from slideserver.annotations.model import (
    ALGORITHM,
    CASE,
    PERSONAL,
    RESEARCH,
    Annotation,
    Layer,
)


@dataclass(frozen=True)
class Caller:
    """Who is asking, as the annotation rules need it (the API maps its principal to this)."""

    subject: str
    admin: bool = False
    clinical: bool = False
    """A pathologist (sees PHI, draws on cases)."""

    @property
    def researcher(self) -> bool:
        return not self.admin and not self.clinical


def can_read(layer: Layer, caller: Caller) -> bool:
    """Tell whether ``caller`` may see the layer and its annotations."""
    if caller.admin:
        return True
    if caller.clinical:
        return layer.kind != PERSONAL or layer.owner == caller.subject
    return layer.kind == RESEARCH or caller.subject in layer.grants


def can_write(layer: Layer, caller: Caller) -> bool:
    """Tell whether ``caller`` may add annotations to the layer."""
    if caller.admin:
        return True
    if layer.locked:
        return False
    if caller.clinical:
        return layer.kind == CASE or (
            layer.kind in (PERSONAL, RESEARCH) and layer.owner == caller.subject
        )
    return caller.subject in layer.grants


def can_edit(annotation: Annotation, layer: Layer, caller: Caller) -> bool:
    """Tell whether ``caller`` may change or delete the annotation."""
    if caller.admin:
        return True
    if not can_write(layer, caller):
        return False
    if caller.clinical and (layer.kind == CASE or layer.owner == caller.subject):
        return True
    return annotation.author == caller.subject


def can_create_layer(kind: str, caller: Caller) -> bool:
    """Tell whether ``caller`` may create a layer of ``kind``."""
    if caller.admin:
        return True
    return caller.clinical and kind != ALGORITHM


def can_manage(layer: Layer, caller: Caller) -> bool:
    """Tell whether ``caller`` may rename, lock, grant or delete the layer."""
    return caller.admin or (caller.clinical and layer.owner == caller.subject)
