"""Builds the shipped demo dataset ``jaxsbert/data/demo/pairs_{train,dev}.jsonl`` (written for this project).

The sentences are customer-support requests to an electronics shop, composed from hand-written templates
(an *intent*) and a product. Intents come in five groups of two related intents. Two requests are as
similar as a support team routing tickets would find them: the request matters most, the product less:

=========================================================  =====
same intent, same product (a paraphrase)                     1.0
same intent, different product                               0.8
related intent (same group), same product                    0.6
related intent, different product                            0.4
unrelated intent, same product                               0.2
unrelated intent, different product                          0.0
=========================================================  =====

An off-the-shelf model over-weights the shared product noun; fine-tuning on the train pairs teaches the
scheme. Train and dev use disjoint templates (dev phrasings are never seen in training).

Run ``python -m jaxsbert.data.make_demo`` to rewrite the files (deterministic).
"""
from __future__ import annotations

import json
import pathlib
import random

PRODUCTS = ("laptop", "headset", "smartwatch", "printer", "tablet", "speaker", "camera", "router", "e-reader",
            "monitor", "robot vacuum", "fitness tracker")

# group -> intent -> templates; templates 0-5 are used for train, 6-7 for dev.
INTENTS: dict[str, dict[str, tuple[str, ...]]] = {
    "account": {
        "login_failure": (
            "I can't sign in to the app for my {p}.",
            "The companion app for my {p} keeps rejecting my login.",
            "Every time I try to log into my {p} account it says my details are wrong.",
            "My {p} app won't let me log in anymore.",
            "Login fails in the {p} app even though I typed everything correctly.",
            "I'm locked out of the account linked to my {p}.",
            "Signing in to manage my {p} just gives me an error.",
            "The {p} app refuses my username and password.",
        ),
        "password_reset": (
            "I forgot the password for my {p} account and need to reset it.",
            "The password reset email for my {p} account never arrives.",
            "How do I change the password of the app that controls my {p}?",
            "I asked for a new password for my {p} login but got no link.",
            "Please help me reset the password on my {p} profile.",
            "The reset link for my {p} account expired before I could use it.",
            "I need a new password for the {p} app because I can't remember mine.",
            "Can you send me another password reset code for my {p} account?",
        ),
    },
    "billing": {
        "refund_request": (
            "I'd like my money back for the {p} I bought.",
            "Please refund the {p}; I no longer want it.",
            "Can I get a full refund on my {p} purchase?",
            "I returned the {p} two weeks ago and still haven't been refunded.",
            "How long does it take to be reimbursed for the returned {p}?",
            "I want to send the {p} back and get my payment returned.",
            "Please reverse the payment for the {p} I shipped back to you.",
            "I'm asking for a refund because the {p} isn't what I expected.",
        ),
        "double_charge": (
            "I was charged twice for the same {p}.",
            "My card shows two payments for one {p} order.",
            "You billed me two times for my {p}.",
            "There is a duplicate charge on my statement for the {p}.",
            "The {p} order went through once but I paid for it twice.",
            "I see the {p} purchase listed twice on my bank account.",
            "My credit card was debited a second time for the {p}.",
            "Why was I charged double when I only ordered one {p}?",
        ),
    },
    "delivery": {
        "late_delivery": (
            "My {p} still hasn't arrived and it's a week late.",
            "Where is my {p}? The delivery date has passed.",
            "The tracking page for my {p} hasn't updated in days.",
            "I've been waiting far too long for the {p} to be delivered.",
            "The {p} I ordered was supposed to come on Monday but it isn't here.",
            "My parcel with the {p} seems to be stuck in transit.",
            "The courier never showed up with my {p}.",
            "It's been ten days and there's no sign of the {p} I ordered.",
        ),
        "change_address": (
            "I need to change the delivery address for my {p} order.",
            "I entered the wrong shipping address when I ordered the {p}.",
            "Can you send the {p} to my office instead of my home?",
            "Please update where the {p} should be shipped; I've moved.",
            "The {p} is going to my old address; can that be fixed?",
            "I made a typo in the street name on my {p} order.",
            "Is it still possible to redirect the {p} to a different address?",
            "My {p} order has an outdated address that needs correcting.",
        ),
    },
    "hardware": {
        "wont_power_on": (
            "My {p} won't turn on at all.",
            "The {p} doesn't power up even when it's plugged in.",
            "Nothing happens when I press the power button on the {p}.",
            "My {p} is completely dead and shows no lights.",
            "The {p} stopped switching on yesterday.",
            "I can't get the {p} to start; it seems to have no power.",
            "Since this morning the {p} refuses to boot.",
            "The {p} stays dark no matter how long I charge it.",
        ),
        "damaged_on_arrival": (
            "The {p} arrived with a cracked case.",
            "My {p} was damaged when it was delivered.",
            "The box was crushed and the {p} inside is broken.",
            "I opened the package and the {p} had a big dent in it.",
            "The {p} came with a shattered screen straight out of the box.",
            "My new {p} showed up scratched and bent.",
            "The {p} was already broken when the courier dropped it off.",
            "Pieces of the {p} had snapped off when I unpacked it.",
        ),
    },
    "protection_plan": {
        "cancel_plan": (
            "Please cancel the protection plan on my {p}.",
            "I want to stop the monthly warranty subscription for my {p}.",
            "How do I end the extended care plan I bought with my {p}?",
            "I don't need the {p} insurance anymore; cancel it.",
            "Stop renewing the service plan for my {p}.",
            "I'd like to terminate the coverage attached to my {p}.",
            "Can you unsubscribe me from the {p} protection programme?",
            "Please end the recurring care package for my {p}.",
        ),
        "upgrade_plan": (
            "I want to upgrade the warranty on my {p} to the premium plan.",
            "Can I add accidental damage cover to my {p} plan?",
            "How do I extend the protection plan on my {p} by two more years?",
            "I'd like better coverage for my {p}; which plans are there?",
            "Please move my {p} service plan to the higher tier.",
            "Is it possible to add more years to the warranty for my {p}?",
            "I want to switch my {p} to the plan that includes repairs at home.",
            "Can you upgrade the care package on my {p} so it covers theft?",
        ),
    },
}

TRAIN_TEMPLATES = range(0, 6)
DEV_TEMPLATES = range(6, 8)
LEVELS = (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)


def score(intent_a: str, product_a: str, intent_b: str, product_b: str) -> float:
    """The demo's similarity scheme (see the module docstring)."""
    group = {intent: g for g, intents in INTENTS.items() for intent in intents}
    same_product = product_a == product_b
    if intent_a == intent_b:
        return 1.0 if same_product else 0.8
    if group[intent_a] == group[intent_b]:
        return 0.6 if same_product else 0.4
    return 0.2 if same_product else 0.0


def _sentence(intent: str, template: int, product: str) -> str:
    group = next(g for g, intents in INTENTS.items() if intent in intents)
    text = INTENTS[group][intent][template].format(p=product)
    return text[0].upper() + text[1:]


def _sample_pair(rng: random.Random, level: float, templates: range) -> tuple[tuple, tuple]:
    """Two (intent, template, product) triples whose score is ``level``."""
    groups = list(INTENTS)
    g1 = rng.choice(groups)
    i1 = rng.choice(list(INTENTS[g1]))
    p1 = rng.choice(PRODUCTS)
    if level in (1.0, 0.8):
        i2 = i1
    elif level in (0.6, 0.4):
        i2 = next(i for i in INTENTS[g1] if i != i1)
    else:
        g2 = rng.choice([g for g in groups if g != g1])
        i2 = rng.choice(list(INTENTS[g2]))
    p2 = p1 if level in (1.0, 0.6, 0.2) else rng.choice([p for p in PRODUCTS if p != p1])
    t1, t2 = rng.choice(templates), rng.choice(templates)
    while i1 == i2 and t1 == t2:     # a paraphrase, never the identical sentence
        t2 = rng.choice(templates)
    return (i1, t1, p1), (i2, t2, p2)


def build_pairs(n_per_level: int, templates: range, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set()
    for level in LEVELS:
        made = 0
        while made < n_per_level:
            a, b = _sample_pair(rng, level, templates)
            if rng.random() < 0.5:
                a, b = b, a
            s1, s2 = _sentence(*a), _sentence(*b)
            if (s1, s2) in seen or (s2, s1) in seen:
                continue
            seen.add((s1, s2))
            assert score(a[0], a[2], b[0], b[2]) == level
            rows.append({"sentence1": s1, "sentence2": s2, "score": level})
            made += 1
    rng.shuffle(rows)
    return rows


def build_demo() -> dict[str, list[dict]]:
    return {"train": build_pairs(40, TRAIN_TEMPLATES, seed=2024),
            "dev": build_pairs(12, DEV_TEMPLATES, seed=2025)}


def write_demo(directory: str | pathlib.Path | None = None) -> list[pathlib.Path]:
    directory = pathlib.Path(directory) if directory else pathlib.Path(__file__).resolve().parent / "demo"
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for split, rows in build_demo().items():
        path = directory / f"pairs_{split}.jsonl"
        with open(path, "w", encoding="utf8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write_demo():
        print(p)
