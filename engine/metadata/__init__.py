"""Metadata: YAML/JSON documents in layers -> one immutable, validated ``AppModel``."""

from .errors import Location, MetadataError, Problem
from .loader import load_model
from .model import AppModel, Entity, Field, Index, Label

__all__ = ["AppModel", "Entity", "Field", "Index", "Label", "Location", "MetadataError", "Problem", "load_model"]
