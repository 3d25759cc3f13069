#!/usr/bin/env python
"""Write the support-ticket sample corpus of the text plugin into ``plugins/tlapp_text/sample_data/``.

    python scripts/make_text_sample.py [--out plugins/tlapp_text/sample_data] [--seed 7]
    python scripts/make_text_sample.py --domain shifted [--out plugins/tlapp_text/sample_target] [--seed 7]

Every sentence is made up for this project from the templates below (no text is
copied from anywhere). Four classes of customer-support tickets:

* ``billing``   -- double charges, refunds, invoices, price changes;
* ``technical`` -- crashes, error messages, slowness, syncing;
* ``shipping``  -- late parcels, tracking, delivery address, damage in transit;
* ``account``   -- passwords, locked or deleted accounts, profile details.

Each class has a few intents, and each intent two sets of wordings:

* the *train* wordings, used for ``train.csv`` and ``val.csv``;
* the *test* wordings, paraphrases that say the same thing in other words
  ("I was charged twice" / "the payment went through two times").

So ``test.csv`` asks for meaning rather than for the words seen in training: a
pretrained language model's knowledge of synonyms helps, a model trained from
scratch on a few hundred tickets can only match words it has seen. Greetings,
sign-offs and product names are shared by all classes and carry no label.

A second label column, ``urgency`` (``urgent`` / ``routine``), makes the corpus a
two-task one (``--set 'data.label_columns=[label,urgency]'``): a ticket is urgent
when its intent leaves the customer out of pocket or unable to use what they
bought (``URGENT``: a double charge, a crash, a locked account, a damaged
parcel), whatever its class, so the text says it and the two tasks differ. A
tenth of the training and validation rows have no urgency (an empty cell),
drawn by a generator of their own, so that the ``text`` and ``label`` columns
are exactly those of the one-task corpus; the test rows all have one.

``--domain shifted`` writes a *target domain* for domain adaptation (DANN, Deep
CORAL) into ``plugins/tlapp_text/sample_target/``: the same four classes and
intents, written as terse in-app chat messages instead of e-mails (lowercase,
abbreviations such as "pls", "acct", "pkg", slang, typos, no greetings or
sign-offs, other products, and the word "app" in every class, where the source
has it almost only in ``technical``). ``unlabelled.csv`` holds the texts a user
would have without labels, ``test.csv`` labelled texts of the same style (no row
of one is in the other). They are drawn by a generator of their own, so the
source corpus does not change with them.

The output is deterministic (a fixed seed, sorted iteration, fixed line endings).
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRODUCTS = ["headphones", "coffee grinder", "desk lamp", "rain jacket", "phone case", "blender", "backpack",
            "keyboard", "water bottle", "yoga mat"]
PRODUCTS_TEST = ["earbuds", "kettle", "floor lamp", "winter coat", "tablet cover", "toaster", "suitcase",
                 "mouse", "thermos", "sleeping bag"]
PLANS = ["premium", "family", "basic", "annual", "student"]
FEATURES = ["settings", "dashboard", "reports", "calendar", "export"]
FEATURES_TEST = ["preferences", "overview", "statistics", "schedule", "download"]
DAYS = ["two days", "a week", "ten days", "three weeks", "five days"]
GREETINGS = ["", "", "", "Hi,", "Hello,", "Good morning,", "Hey there,", "Dear support,"]
SIGNOFFS = ["", "", "", "Thanks.", "Thank you!", "Please help.", "Any ideas?", "Regards.", "Cheers."]

# class -> intent -> (train wordings, test wordings). Slots: {product} {plan} {feature} {days}.
TICKETS: dict[str, dict[str, tuple[list[str], list[str]]]] = {
    "billing": {
        "double charge": (
            ["I was charged twice for my {plan} subscription",
             "there are two charges on my statement for the same order",
             "you billed me twice for the {product}",
             "my credit card was charged two times this month"],
            ["the payment went through two times for one purchase",
             "my bank shows the same amount taken out twice",
             "I paid once but the money left my account two times",
             "the fee for my {plan} membership was deducted twice"]),
        "refund": (
            ["I still have not received my refund for the {product}",
             "when will I get my refund for the returned {product}",
             "please refund the {product} I sent back {days} ago",
             "my refund has not been processed yet"],
            ["I want my money back for the {product} I returned",
             "you promised to reimburse me {days} ago and nothing came",
             "the reimbursement for my return never reached my bank",
             "please pay me back for the {product} I mailed to you"]),
        "invoice": (
            ["please send me an invoice for my last payment",
             "I need an invoice for the {product} for my company",
             "the invoice shows the wrong amount",
             "can I get a copy of my invoice from last month"],
            ["I need a receipt for my tax records",
             "could you email me proof of purchase for the {product}",
             "the bill lists a total that is too high",
             "my employer needs a receipt for what I paid"]),
        "price": (
            ["why did the price of my {plan} plan go up",
             "my monthly fee increased without notice",
             "I was charged more than the advertised price",
             "the price I paid is higher than the price on your website"],
            ["the cost of my {plan} membership rose and nobody told me",
             "why am I paying more money than before",
             "the amount taken from my card is bigger than what the shop said",
             "my bank statement shows a higher cost than I agreed to"]),
    },
    "technical": {
        "crash": (
            ["the app crashes when I open the {feature} page",
             "the app keeps crashing on my phone",
             "every time I click {feature} the program crashes",
             "the app crashes right after the update"],
            ["the application closes by itself whenever I go to {feature}",
             "the software shuts down suddenly on my tablet",
             "the program quits without warning when I tap {feature}",
             "since the new version the application just exits"]),
        "error": (
            ["I get an error when I try to upload a file",
             "an error message appears on the {feature} screen",
             "the upload fails with an error",
             "I see error 500 when I save my changes"],
            ["sending a document fails with a strange message",
             "a warning pops up and nothing is saved on {feature}",
             "attaching a picture does not work and shows a red notice",
             "the system refuses to store my edits and displays code 500"]),
        "slow": (
            ["the website is very slow today",
             "the {feature} page takes minutes to load",
             "the app is slow and freezes",
             "loading the {feature} is extremely slow"],
            ["pages take forever to appear on the site",
             "the {feature} screen needs ages before it shows anything",
             "everything hangs and the application is sluggish",
             "the program is lagging badly and barely responds"]),
        "sync": (
            ["my data does not sync between my phone and laptop",
             "the sync stopped working after the update",
             "changes I make on the app do not sync to the website",
             "my {feature} is not syncing across devices"],
            ["edits on my mobile don't show up on my computer",
             "my notes on the tablet and the pc no longer match",
             "what I change on the website never reaches the mobile version",
             "my {feature} looks different on each device I use"]),
    },
    "shipping": {
        "late": (
            ["my package has not arrived yet",
             "my order was supposed to arrive {days} ago",
             "the delivery of my {product} is late",
             "I ordered the {product} {days} ago and it has not arrived"],
            ["the parcel still isn't here",
             "I'm still waiting for the box that should have come {days} ago",
             "where is my {product}, it should be at my door by now",
             "the courier never brought my purchase"]),
        "tracking": (
            ["the tracking number does not work",
             "the tracking page shows no updates for my order",
             "I cannot track my package",
             "tracking says delivered but I have no package"],
            ["I can't follow my parcel online",
             "the courier's site has no information on where my box is",
             "the code you gave me to follow the shipment is invalid",
             "the status claims it was dropped off but nothing is at my door"]),
        "address": (
            ["I need to change the delivery address for my order",
             "please ship my {product} to a different address",
             "I entered the wrong address for the delivery",
             "can you update the shipping address before the order ships"],
            ["please send the box to my new home instead",
             "I moved, can the courier bring the {product} to my new flat",
             "I typed the wrong street when I bought the {product}",
             "the parcel should go to my office, not my old house"]),
        "damaged": (
            ["the package arrived damaged",
             "my {product} was broken when the package arrived",
             "the box was damaged during delivery",
             "the order arrived damaged and wet"],
            ["the parcel came crushed and torn",
             "the {product} was in pieces when the courier brought it",
             "the carton was smashed in transit",
             "my purchase showed up soaked and dented"]),
    },
    "account": {
        "password": (
            ["I forgot my password and cannot log in",
             "the password reset email never arrives",
             "how do I reset my password",
             "my password does not work anymore"],
            ["I can't remember my login credentials",
             "the link to recover my sign-in never reaches my inbox",
             "how can I set a new passcode",
             "the secret word I always used is rejected when I sign in"]),
        "locked": (
            ["my account is locked after too many attempts",
             "I am locked out of my account",
             "my account was suspended and I cannot log in",
             "please unlock my account"],
            ["I've been blocked from signing in",
             "the system barred me after a few wrong tries",
             "my profile was frozen and I can't get in",
             "please give me access to my profile again"]),
        "delete": (
            ["please delete my account",
             "how do I delete my account and my data",
             "I want to close my account",
             "remove my account permanently"],
            ["I want to close my profile permanently",
             "erase my user profile and everything you store about me",
             "please get rid of my membership and personal details",
             "how can I stop being a registered user for good"]),
        "email": (
            ["how do I change the email address on my account",
             "I want to update my username",
             "my account still shows my old email address",
             "please change the name on my account"],
            ["I'd like to update the contact mail linked to my profile",
             "how can I pick a different login name",
             "my profile lists an old mailbox I no longer use",
             "please correct how my name appears on my profile"]),
    },
}

COUNTS = {"train": 100, "val": 25, "test": 40}  # per class
# (class, intent) pairs whose tickets are urgent; every other ticket is routine.
URGENT = {("billing", "double charge"), ("technical", "crash"), ("shipping", "damaged"), ("account", "locked")}
UNLABELLED_FRACTION = {"train": 0.1, "val": 0.1, "test": 0.0}  # rows without an urgency


def fill(template: str, rng: random.Random, test: bool) -> str:
    return template.format(product=rng.choice(PRODUCTS_TEST if test else PRODUCTS), plan=rng.choice(PLANS),
                           feature=rng.choice(FEATURES_TEST if test else FEATURES), days=rng.choice(DAYS))


def ticket(template: str, rng: random.Random, test: bool) -> str:
    body = fill(template, rng, test)
    greeting, signoff = rng.choice(GREETINGS), rng.choice(SIGNOFFS)
    body = body[0].upper() + body[1:] if not greeting else body
    return " ".join(part for part in (greeting, body + rng.choice([".", ".", "!", "?"]), signoff) if part)


def generate(seed: int) -> dict[str, list[tuple[str, str, str]]]:
    """Per split, (text, label, urgency) rows; urgency is "" where the row has none."""
    rng = random.Random(seed)
    out: dict[str, list[tuple[str, str, str]]] = {split: [] for split in COUNTS}
    seen: set[str] = set()
    for label in sorted(TICKETS):
        intents = TICKETS[label]
        for split, count in COUNTS.items():
            test = split == "test"
            made = 0
            while made < count:
                intent = sorted(intents)[made % len(intents)]
                template = rng.choice(intents[intent][1 if test else 0])
                text = ticket(template, rng, test)
                if text.lower() in seen:
                    continue
                seen.add(text.lower())
                out[split].append((text, label, "urgent" if (label, intent) in URGENT else "routine"))
                made += 1
    for split in out:
        rng.shuffle(out[split])
    # Drawn apart from ``rng``, which wrote the texts and labels: they stay those of the one-task corpus.
    blanks = random.Random(f"{seed}:urgency")
    for split, rows in out.items():
        for i in blanks.sample(range(len(rows)), round(len(rows) * UNLABELLED_FRACTION[split])):
            rows[i] = (*rows[i][:2], "")
    return out


# ---------------------------------------------------------------- the shifted target domain (--domain shifted)

TARGET_ITEMS = ["sneakers", "charger", "smartwatch", "speaker", "hoodie", "gaming chair", "air fryer", "monitor",
                "skateboard", "sunglasses"]
TARGET_SUBS = ["pro", "plus", "monthly", "gold", "vip"]
TARGET_SCREENS = ["feed", "inbox", "cart", "photos", "search", "wishlist", "checkout", "chat"]
TARGET_DEVICES = ["iphone", "android", "ipad", "pixel", "galaxy"]
TARGET_AGO = ["2 wks", "5 days", "like a month", "3 days", "a wk", "forever"]
TARGET_PRICES = ["$9.99", "$14.99", "$30", "$4.99", "$59"]
TARGET_CODES = ["403", "e12", "0x80", "502", "e-401"]
# said before or after a message now and then; no greetings, no sign-offs
TARGET_OPENERS = ["", "", "", "", "", "ugh ", "hey ", "yo ", "ok so ", "umm ", "help ", "srsly "]
TARGET_ENDINGS = ["", "", "", "", "", " ??", " !!", " asap", " smh", " fr", " tbh", " lol", " rn", " :/", " pls"]
# word -> what a thumb types instead (each taken or not at random)
TARGET_SHORT = {"please": ["pls", "plz"], "account": ["acct", "acc"], "package": ["pkg", "pack"],
                "password": ["pw", "pwd"], "you": ["u"], "your": ["ur"], "are": ["r"], "because": ["bc", "cuz"],
                "thanks": ["thx", "ty"], "message": ["msg"], "don't": ["dont", "dnt"], "can't": ["cant", "cnt"],
                "doesn't": ["doesnt", "dosnt"], "i'm": ["im"], "it's": ["its"], "won't": ["wont"],
                "with": ["w"], "really": ["rly"], "something": ["smth"], "address": ["addy", "adress"],
                "tomorrow": ["tmrw"], "right now": ["rn"], "money": ["$$", "cash"], "delivery": ["delivry"],
                "subscription": ["sub", "subscr"], "refund": ["refnd"], "again": ["agn"], "what": ["wat"],
                "to": ["2"], "for": ["4"], "anything": ["anythin"], "nothing": ["nothin"]}

# class -> intent -> chat wordings. Slots: {item} {sub} {screen} {device} {ago} {price} {code}.
TARGET: dict[str, dict[str, list[str]]] = {
    "billing": {
        "double charge": ["got charged twice 4 my {sub} subscription",
                          "app store took {price} two times for one order",
                          "{sub} renewal hit my card twice this month",
                          "paid once but the app took my cash 2x",
                          "why r there 2 payments of {price} from u"],
        "refund": ["still no refund 4 the {item} i sent back {ago} ago",
                   "returned the {item}, where is my cash",
                   "refund says pending in the app for {ago}",
                   "u said i'd get my {price} back, nothing on my card",
                   "sent the {item} back, still waiting on my $"],
        "invoice": ["need proof i paid 4 the {item}, work wants it",
                    "where do i find invoices in the app",
                    "receipt in the app shows the wrong total",
                    "can u send the bill for my {sub} plan, need it 4 taxes",
                    "how do i get a pdf of what i paid last month"],
        "price": ["why did {sub} go up to {price}",
                  "{sub} got pricier with no warning not cool",
                  "app showed {price} at checkout then took more",
                  "{sub} costs more now?? didn't agree to that",
                  "paying more than last month 4 the same plan"],
    },
    "technical": {
        "crash": ["app crashes every time i open {screen}",
                  "keeps force closing on my {device}",
                  "checkout screen dies when i hit pay",
                  "opens then instantly closes on {device}",
                  "tap {screen} and the whole thing boots me out"],
        "error": ["getting error {code} when i save",
                  "order page says something went wrong",
                  "error {code} on {screen} every time",
                  "cant attach pics to my profile, red error pops up",
                  "{screen} just shows oops try again later"],
        "slow": ["app so laggy rn",
                 "{screen} takes forever to load",
                 "payment page loads like 2 min",
                 "stuck on the spinning wheel on {screen}",
                 "everything freezes for like 10 sec on my {device}"],
        "sync": ["stuff i add on my {device} doesn't show up on my laptop",
                 "cart on my phone and on the website dont match",
                 "{screen} on my phone and tablet dont match",
                 "changes on the website never show in the app",
                 "my {screen} is different on every device"],
    },
    "shipping": {
        "late": ["pkg still not here",
                 "order was due {ago} ago, nothing yet",
                 "where is my {item} ???",
                 "been waiting {ago} for my stuff",
                 "app said arriving tuesday, its friday, no {item}"],
        "tracking": ["tracking link dead",
                     "tracking stuck on label created for {ago}",
                     "app says delivered but nothing at my door",
                     "no clue where my {item} is, no updates at all",
                     "courier site has no info on my order"],
        "address": ["need to change where my order goes",
                    "put the wrong address on my order pls fix",
                    "send my {item} to my work instead",
                    "moved last week, can u ship to my new place",
                    "app saved my old address, order not out yet"],
        "damaged": ["{item} showed up broken",
                    "box was crushed and the {item} is cracked",
                    "pkg arrived soaking wet",
                    "{item} came in pieces",
                    "opened the box, {item} all dented"],
    },
    "account": {
        "password": ["forgot password cant get in",
                     "reset link never comes to my inbox",
                     "how do i change my password in the app",
                     "password not working anymore",
                     "app keeps saying wrong password but its right"],
        "locked": ["account locked after a few tries",
                   "locked out, please let me back in",
                   "account suspended for no reason??",
                   "cant get in, app says account disabled",
                   "blocked from signing in on my {device}"],
        "delete": ["delete my account please",
                   "how do i wipe my account and all my data",
                   "want to close my account for good",
                   "remove my profile, done with this app",
                   "how to get rid of my account, cant find it in settings"],
        "email": ["how do i change the email on my account",
                  "wanna change my username",
                  "app still shows my old email",
                  "name on my account is spelled wrong pls fix",
                  "new phone number, how do i update it on my profile"],
    },
}

TARGET_COUNTS = {"unlabelled": 75, "test": 40}  # per class
TYPO_RATE = 0.12  # per word of four letters or more
SHORT_RATE = 0.85  # per word TARGET_SHORT knows


def typo(word: str, rng: random.Random) -> str:
    """The word with two letters swapped, one dropped or one doubled."""
    i = rng.randrange(1, len(word) - 1)
    kind = rng.randrange(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def chat(template: str, rng: random.Random) -> str:
    """One message in the target style: the filled template, shortened, with typos, lowercase."""
    text = template.format(item=rng.choice(TARGET_ITEMS), sub=rng.choice(TARGET_SUBS),
                           screen=rng.choice(TARGET_SCREENS), device=rng.choice(TARGET_DEVICES),
                           ago=rng.choice(TARGET_AGO), price=rng.choice(TARGET_PRICES),
                           code=rng.choice(TARGET_CODES)).lower()
    for long in sorted(TARGET_SHORT, key=lambda w: (-len(w), w)):  # "right now" before "now"
        if long in text:
            parts = text.split(long)
            text = parts[0] + "".join((rng.choice(TARGET_SHORT[long]) if rng.random() < SHORT_RATE and
                                       _whole(parts, i, long) else long) + part
                                      for i, part in enumerate(parts[1:]))
    words = [typo(w, rng) if w.isalpha() and len(w) >= 4 and rng.random() < TYPO_RATE else w
             for w in text.split(" ")]
    return (rng.choice(TARGET_OPENERS) + " ".join(words) + rng.choice(TARGET_ENDINGS)).replace("'", "")


def _whole(parts: list[str], i: int, word: str) -> bool:
    """Whether the occurrence of ``word`` after ``parts[i]`` is a whole word (not "to" in "tomorrow")."""
    before, after = parts[i], parts[i + 1]
    return (not before or not before[-1].isalnum()) and (not after or not after[0].isalnum())


def generate_target(seed: int, source: dict[str, list[tuple[str, str, str]]] | None = None
                    ) -> dict[str, list[tuple[str, ...]]]:
    """The target domain: ``unlabelled`` as (text,) rows, ``test`` as (text, label) rows.

    Drawn by a generator of its own (``{seed}:target``); no text is in both files, nor in ``source``."""
    rng = random.Random(f"{seed}:target")
    seen = {text.lower() for rows in (source or generate(seed)).values() for text, *_ in rows}
    out: dict[str, list[tuple[str, ...]]] = {split: [] for split in TARGET_COUNTS}
    for label in sorted(TARGET):
        intents = TARGET[label]
        for split, count in TARGET_COUNTS.items():
            made = 0
            while made < count:
                text = chat(rng.choice(intents[sorted(intents)[made % len(intents)]]), rng)
                if text in seen:
                    continue
                seen.add(text)
                out[split].append((text,) if split == "unlabelled" else (text, label))
                made += 1
    for rows in out.values():
        rng.shuffle(rows)
    return out


def write_source(out: Path, seed: int) -> None:
    for split, rows in generate(seed).items():
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "label", "urgency"])
            writer.writerows(rows)
        print(f"{out / f'{split}.csv'}: {len(rows)} texts")
    (out / "README.md").write_text(README)


def write_target(out: Path, seed: int) -> None:
    for split, rows in generate_target(seed).items():
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text"] if split == "unlabelled" else ["text", "label"])
            writer.writerows(rows)
        print(f"{out / f'{split}.csv'}: {len(rows)} texts")
    (out / "README.md").write_text(TARGET_README)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", choices=["source", "shifted"], default="source",
                        help="source: the support tickets (sample_data); shifted: the chat-style target domain "
                             "(sample_target)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: plugins/tlapp_text/sample_data, or sample_target with --domain shifted")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    out = args.out or ROOT / "plugins" / "tlapp_text" / ("sample_data" if args.domain == "source" else "sample_target")
    out.mkdir(parents=True, exist_ok=True)
    (write_source if args.domain == "source" else write_target)(out, args.seed)


README = """# Text sample: support tickets

Made-up customer-support tickets in four classes (billing, technical, shipping,
account), written for tlapp by `scripts/make_text_sample.py` from templates; no
text is copied from anywhere. Regenerate with `python scripts/make_text_sample.py`.

* `train.csv` (400), `val.csv` (100): the training wordings.
* `test.csv` (160): paraphrases in other words (fixed test split), so that the
  test measures what a pretrained model knows about meaning.

Columns: `text`, `label`, and `urgency` (`urgent` or `routine`; empty in a tenth
of the train and val rows), a second task for multi-task runs:
`tlapp run --plugin text --set 'data.label_columns=[label,urgency]'`. A ticket
is urgent when its intent is a double charge, a crash, a locked account or a
damaged parcel, whatever its class; the default run reads `label` alone.
"""

TARGET_README = """# Text sample: target domain (chat messages)

A shifted *target domain* for the support-ticket sample in `../sample_data/`, for
domain adaptation (DANN, Deep CORAL): the same four classes (billing, technical,
shipping, account) and intents, written as terse in-app chat messages instead of
e-mails. Made up for tlapp by `scripts/make_text_sample.py` from templates; no
text is copied from anywhere. Regenerate with
`python scripts/make_text_sample.py --domain shifted`.

The shift: lowercase, abbreviations and slang (`pls`, `acct`, `pkg`, `pw`, `u`,
`rn`, `smh`), typos, no greetings or sign-offs, other products (sneakers,
chargers, a `pro` or `vip` subscription), and the word "app" in every class
(the source tickets say it almost only about technical problems). A person
still reads the intent from the message; a model trained on the tickets alone
does worse on it.

* `unlabelled.csv` (300, column `text`): what a user would have of the target
  domain, without labels; 75 messages of each class.
* `test.csv` (160, columns `text`, `label`): labelled messages of the same style,
  40 of each class, none of them in `unlabelled.csv`, to measure what the
  adaptation brought: `tlapp evaluate --run RUN --data plugins/tlapp_text/sample_target/test.csv`.

No message is the same as a ticket of the source corpus.
"""


if __name__ == "__main__":
    main()
