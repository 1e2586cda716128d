"""Signals: what the online loop learns from, computed once per rollout batch on the student's
own samples.

Which signal a stage uses is what tells the methods of the lineage apart; the loop in
`stages/online.py` is the same for all of them:

    VerifierSignal        RLVR, R1: a program checks each completion (reward per sequence)
    RewardModelSignal     RLHF / PPO: a learned reward model scores each completion
    TeacherSignal         on-policy distillation: a teacher's log-probs on the student's tokens
    RoutedTeacherSignal   MOPD: each row goes to the teacher of its prompt's domain

A signal is anything that meets the `Signal` protocol: `signal(rollout, examples) ->
SignalOutput`, where `examples[i]` is the task item that produced row i. The built-in signals
also have `spec()` (what the stage cache records, so a teacher run never reuses a verifier
run), `setup(model, tokenizer, device)` (checks that the signal's models fit the student before
training starts) and `rollout_topk` (> 0 when the sampler must record the student's top-k ids);
the loop uses them when present, so a plain function is a signal too.
Signals own where their models live: `placement="device"` keeps a model on the training
device, `"swap"` parks it on the CPU and moves it to the device only while it scores its rows
(memory bounded by the largest teacher).
"""
from .base import PLACEMENTS, TEACHER_MODES, Signal, SignalOutput, check_rows, model_key, placed
from .outcome import RewardModelSignal, VerifierSignal
from .routed import RoutedTeacherSignal, route_of, route_rows
from .teacher import TeacherSignal

__all__ = ["PLACEMENTS", "TEACHER_MODES", "Signal", "SignalOutput", "check_rows", "model_key", "placed",
           "VerifierSignal", "RewardModelSignal", "TeacherSignal", "RoutedTeacherSignal", "route_of", "route_rows"]
