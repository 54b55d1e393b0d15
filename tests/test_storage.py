"""camp.storage: the journal's cut-off tail is repaired (named, under its lock) and the study reads on."""

from __future__ import annotations

import optuna

from camp.storage import make_storage, repair_journal_tail


def test_a_journal_cut_mid_record_is_repaired_and_resumes(tmp_path, capsys):
    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="cut", storage=make_storage(str(journal)), direction="maximize")
    for value in (0.1, 0.2):
        study.tell(study.ask(), value)
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 4, "worker_id": "x", "trial_id": 9, "sta')  # a crash mid-write
    study = optuna.load_study(study_name="cut", storage=make_storage(str(journal)))
    assert f"{journal}: its last record was cut off" in capsys.readouterr().err
    assert journal.read_bytes() == whole
    study.tell(study.ask(), 0.3)  # appending works, and a fresh reader sees every trial
    again = optuna.load_study(study_name="cut", storage=make_storage(str(journal)))
    assert [t.value for t in again.trials] == [0.1, 0.2, 0.3]


def test_an_intact_or_empty_journal_is_left_alone(tmp_path):
    journal = tmp_path / "optuna.journal"
    assert repair_journal_tail(journal) == 0  # missing
    journal.write_bytes(b"")
    assert repair_journal_tail(journal) == 0
    journal.write_bytes(b'{"a": 1}\n')
    assert repair_journal_tail(journal) == 0 and journal.read_bytes() == b'{"a": 1}\n'
    journal.write_bytes(b'{"a": 1')  # one partial record and nothing else
    assert repair_journal_tail(journal) == 7 and journal.read_bytes() == b""
