"""The data pipeline, LibriSpeech-format corpus to batches of windows, one module a job.

The model sees fixed-size windows cut from the glued audio of many files, as in CPC_audio.
:mod:`~cpc.data.listing` lists the files (:mod:`~cpc.data.layout` checks the speaker level),
:mod:`~cpc.data.splits` and :mod:`~cpc.data.labels` choose them and attach phone labels,
:mod:`~cpc.data.plan` groups them into packs and plans each pack's batches (pure functions),
:mod:`~cpc.data.packs` reads packs (:mod:`~cpc.data.audio`) and cuts windows,
:mod:`~cpc.data.loader` iterates an epoch of batches (:mod:`~cpc.data.batch`),
:mod:`~cpc.data.prefetch` builds them ahead in a thread, and :mod:`~cpc.data.corpus` assembles
a run's data from its flags. Every user-facing problem raises
:class:`~cpc.utils.errors.DataError` with a message naming the culprit.
"""
