"""The bundled recipes (``*.yaml``), shipped as package data: ``nas-aug recipes`` lists them and
``nas-aug run NAME`` runs one by name."""
