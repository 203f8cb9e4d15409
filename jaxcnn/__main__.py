"""``python -m jaxcnn`` runs the ``jaxcnn`` command."""

from jaxcnn.cli import run

run()
