"""The gallery: who is enrolled, their sealed templates, and erasure that erases.

- :mod:`.store`: residents and their templates in SQLite (:class:`~.store.GalleryStore`),
  loaded as a :class:`~.store.Gallery` that the matcher searches;
- :mod:`.templates`: templates sealed at rest (:class:`~.templates.TemplateCipher`);
- :mod:`.erasure`: a resident's rows overwritten, pages handed back, the WAL emptied.

Below :mod:`kiosk.match` (the matcher searches the gallery; the gallery knows
nothing of detection, tracking, sync or the admin tools).
"""
