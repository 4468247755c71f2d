"""trio services, each owning one piece of state (DESIGN.md "The pipeline")."""
