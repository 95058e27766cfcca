#!/usr/bin/env python3
"""Generate the embedded quickstart dataset (personal-assistant commands).

This script writes a small, synthetic dataset for joint intent classification
and slot filling in the JointBERT directory layout:

    data/quickstart/{train,dev,test}/seq.in    one sentence per line, tokens
                                               separated by single spaces
    data/quickstart/{train,dev,test}/seq.out   one IOB2 tag per token
                                               (B-<slot>, I-<slot> or O)
    data/quickstart/{train,dev,test}/label     one intent per line

Everything is lowercase, tokens are made of ``[a-z0-9]`` only (no
punctuation, no apostrophes), so a plain whitespace split gives the tokens.

How it works
------------
* Every intent has a list of hand-written templates. A template is a string
  of words, ``{slot}`` placeholders and ``(a|b|)`` alternation groups (an empty
  alternative makes the group optional). Groups are expanded at random.
* Every slot type has a list of values (some built programmatically, e.g.
  times, dates and durations). A value may carry a leading context word
  written ``prefix~value`` (``on~monday``): the prefix is emitted with tag
  ``O`` and only the value is tagged. This lets templates stay free of
  prepositions that depend on the value ("tomorrow" vs "on monday").
* Held-out split: with a fixed seed, about 20% of the values of every slot
  type and about 20% of the templates of every intent are reserved. The
  train split never uses them. The first three templates of each intent
  (the canonical phrasings) and a few everyday values (``PROTECTED_VALUES``:
  "7 am", "tomorrow", "london", "mom", "milk", ...) are never held out.
  Dev and test use a held-out template with probability
  ``P_HELDOUT_TEMPLATE`` and draw each slot value from the held-out pool
  with probability ``P_HELDOUT_VALUE``, so they mostly overlap with train
  but also measure generalisation to unseen phrasings and values.
* Sentences are unique within a split and dev/test never repeat a train
  sentence (nor each other).
* ``a`` is turned into ``an`` before a slot value that starts with a vowel.
* A few sentences (``P_FILLER``) start with a spoken filler ("hey", "ok").

The generator uses only the Python 3 standard library and a fixed seed
(``random.Random(SEED)``), so its output is byte-for-byte reproducible.
Before writing, it checks every line (token count == tag count, valid IOB2,
allowed characters) and that every intent appears in every split, then prints
summary statistics.

Usage
-----
    python3 scripts/quickstart_data/generate.py            # (re)write files
    python3 scripts/quickstart_data/generate.py --check    # verify the files
                                                           # on disk match
    python3 scripts/quickstart_data/generate.py --out DIR  # write elsewhere

License: same as the project, MIT OR Apache-2.0. All templates and value
lists were written for this project.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from collections import Counter
from pathlib import Path

SEED = 20240611
SPLIT_SIZES = {"train": 800, "dev": 150, "test": 150}
HELDOUT_VALUE_FRACTION = 0.2
HELDOUT_TEMPLATE_FRACTION = 0.2
P_HELDOUT_TEMPLATE = 0.25
P_HELDOUT_VALUE = 0.25
P_FILLER = 0.08
FILLERS = ["hey", "ok", "okay", "hi", "hey there", "excuse me", "um", "so",
           "alright"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "data" / "quickstart"

# ---------------------------------------------------------------------------
# Slot values
# ---------------------------------------------------------------------------

NUM_WORDS = {
    1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six",
    7: "seven", 8: "eight", 9: "nine", 10: "ten", 11: "eleven", 12: "twelve",
    15: "fifteen", 20: "twenty", 25: "twenty five", 30: "thirty",
    40: "forty", 45: "forty five", 50: "fifty", 90: "ninety",
}
MINUTE_WORDS = {5: "oh five", 10: "ten", 15: "fifteen", 20: "twenty",
                30: "thirty", 40: "forty", 45: "forty five", 50: "fifty"}


def build_times() -> list[str]:
    vals: list[str] = []
    for h in range(1, 13):
        w = NUM_WORDS[h]
        vals += [f"{h} am", f"{h} pm", f"{w} am", f"{w} pm"]
        for mm in (15, 30, 45):
            vals.append(f"{h} {mm} {'am' if h % 2 else 'pm'}")
        for mm in (5, 10, 20, 40, 50):
            if (h + mm) % 3 == 0:
                vals.append(f"{h} {mm:02d} {'pm' if h % 2 else 'am'}")
        vals += [f"{w} {MINUTE_WORDS[30]}", f"{w} {MINUTE_WORDS[15]}",
                 f"half past {w}", f"quarter past {w}", f"quarter to {w}"]
        if h in (5, 6, 7, 8, 9, 10):
            vals.append(f"{h} in the morning")
            vals.append(f"{w} in the evening")
        if h in (9, 10, 11):
            vals.append(f"{w} at night")
        if h in (2, 3, 4):
            vals.append(f"{h} in the afternoon")
    vals += ["noon", "midnight", "midday", "seven forty five", "six oh five",
             "eleven fifty", "eight twenty"]
    return vals


WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday",
            "saturday", "sunday"]
MONTHS = ["january", "february", "march", "april", "may", "june", "july",
          "august", "september", "october", "november", "december"]
ORDINALS = {1: "1st", 2: "2nd", 3: "3rd", 4: "4th", 5: "5th", 7: "7th",
            9: "9th", 12: "12th", 14: "14th", 18: "18th", 21: "21st",
            22: "22nd", 23: "23rd", 25: "25th", 28: "28th", 30: "30th"}
ORDINAL_WORDS = {1: "first", 2: "second", 3: "third", 4: "fourth",
                 5: "fifth", 10: "tenth", 15: "fifteenth", 20: "twentieth"}


def build_dates() -> list[str]:
    vals = ["today", "tomorrow", "tonight", "this weekend", "next weekend",
            "the day after tomorrow", "tomorrow morning", "tomorrow night",
            "this evening", "this afternoon", "next week"]
    for d in WEEKDAYS:
        vals += [f"on~{d}", f"next {d}", f"this {d}", f"on~{d} morning",
                 f"on~{d} evening"]
    for i, m in enumerate(MONTHS):
        days = list(ORDINALS.items())
        d1, o1 = days[(i * 5) % len(days)]
        d2, o2 = days[(i * 5 + 7) % len(days)]
        vals += [f"on~{m} {o1}", f"on~the {o2} of {m}"]
        ow = list(ORDINAL_WORDS.values())[i % len(ORDINAL_WORDS)]
        if i % 2 == 0:
            vals.append(f"on~the {ow} of {m}")
    return vals


def build_durations() -> list[str]:
    vals: list[str] = []
    for n in (2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 45, 50, 90):
        vals.append(f"{n} minutes")
        if n in NUM_WORDS:
            vals.append(f"{NUM_WORDS[n]} minutes")
    for n in (10, 15, 20, 30, 45, 90):
        vals.append(f"{n} seconds")
    for n in (2, 3, 4):
        vals += [f"{n} hours", f"{NUM_WORDS[n]} hours"]
    vals += ["1 minute", "one minute", "a minute", "an hour", "1 hour",
             "one hour", "half an hour", "an hour and a half",
             "a minute and a half", "two and a half minutes",
             "1 hour and 15 minutes", "1 hour 30 minutes",
             "2 hours and 10 minutes", "a quarter of an hour",
             "thirty seconds", "ninety seconds", "a couple of minutes",
             "five and a half minutes", "one hour and twenty minutes"]
    return vals


def build_party_sizes() -> list[str]:
    vals = [str(n) for n in range(2, 13)]
    vals += [NUM_WORDS[n] for n in range(2, 13)]
    vals += ["14", "15", "16", "20"]
    return vals


SLOT_VALUES: dict[str, list[str]] = {
    "time": build_times(),
    "date": build_dates(),
    "duration": build_durations(),
    "party_size": build_party_sizes(),
    "city": [
        "london", "paris", "tokyo", "berlin", "madrid", "rome", "new york",
        "los angeles", "san francisco", "chicago", "boston", "seattle",
        "toronto", "vancouver", "montreal", "mexico city", "buenos aires",
        "rio de janeiro", "sao paulo", "lima", "bogota", "cape town",
        "nairobi", "cairo", "lagos", "dubai", "istanbul", "athens", "lisbon",
        "dublin", "edinburgh", "amsterdam", "brussels", "vienna", "prague",
        "warsaw", "budapest", "stockholm", "oslo", "copenhagen", "helsinki",
        "reykjavik", "mumbai", "new delhi", "bangalore", "singapore",
        "kuala lumpur", "hong kong", "seoul", "beijing", "shanghai",
        "bangkok", "hanoi", "manila", "jakarta", "sydney", "melbourne",
        "auckland", "honolulu", "salt lake city", "new orleans",
        "las vegas", "denver", "austin", "miami", "glasgow", "marseille",
        "munich", "zurich", "krakow", "osaka", "perth", "santiago",
        "addis ababa", "tel aviv", "saint petersburg", "porto", "naples",
    ],
    "artist": [
        "adele", "beyonce", "the beatles", "queen", "taylor swift",
        "ed sheeran", "bob marley", "miles davis", "nina simone",
        "daft punk", "coldplay", "radiohead", "fleetwood mac",
        "stevie wonder", "aretha franklin", "johnny cash", "dolly parton",
        "kendrick lamar", "billie eilish", "bruno mars", "the rolling stones",
        "pink floyd", "abba", "david bowie", "elton john", "frank sinatra",
        "ella fitzgerald", "norah jones", "john coltrane", "shakira",
        "rihanna", "drake", "lady gaga", "the weeknd", "arctic monkeys",
        "foo fighters", "metallica", "nirvana", "louis armstrong",
        "whitney houston", "michael jackson", "lana del rey", "bon iver",
        "tame impala", "yo yo ma", "ludovico einaudi", "hans zimmer",
        "the cure", "massive attack", "fela kuti", "buena vista social club",
        "the velvet underground", "herbie hancock", "joni mitchell",
        "bjork", "sade", "the clash", "dua lipa", "ray charles",
        "the midnight owls", "harbor lights collective", "juniper and the foxes",
    ],
    "song": [
        "paper lanterns", "midnight on the river", "golden hour drive",
        "cold coffee", "the long way home", "neon rain", "lighthouse keeper",
        "silver lining waltz", "dancing in the kitchen", "hold the door",
        "northern lights", "tangerine sky", "slow train to nowhere",
        "seven bridges", "wildflower", "heartbeat radio",
        "under the streetlight", "falling leaves", "blue velvet morning",
        "echoes in the hall", "ghost town lullaby", "sugar and salt",
        "fire escape", "weekend warrior", "whisper", "kingdom of sand",
        "red balloon", "one more dance", "highway hymn", "city of glass",
        "porch light", "velvet thunder", "shallow water", "starlight motel",
        "copper moon", "rooftop serenade", "lemon tree song",
        "a thousand paper cranes", "counting sheep", "electric heart",
        "runaway summer", "harbour blues", "the last tram", "honey and smoke",
        "rain on the tin roof", "brave little bird", "the quiet hours",
        "glass of wine", "october skies", "dust and diamonds",
        "open road", "sunday best", "stay a while", "broken compass",
    ],
    "contact": [
        "mom", "dad", "grandma", "grandpa", "my~sister", "my~brother",
        "my~wife", "my~husband", "my~boss", "my~landlord", "sarah", "james",
        "priya", "mohammed", "li wei", "olivia", "noah", "emma", "lucas",
        "sofia", "mateo", "aisha", "kenji", "fatima", "daniel", "chloe",
        "oliver", "isabella", "ethan", "zoe", "hannah", "jack", "grace",
        "liam", "amara", "diego", "nadia", "tom", "john miller",
        "anna schmidt", "carlos ruiz", "mei chen", "david okafor",
        "laura bianchi", "dr patel", "uncle joe", "aunt linda",
        "coach rivera", "mrs thompson", "ben and jerry",
        "the babysitter", "the plumber", "ingrid", "yusuf", "marta lopez",
    ],
    "message": [
        "i am running late", "dinner is ready", "see you at the station",
        "can you pick up the kids", "happy birthday", "call me when you land",
        "i left my keys at home", "do not forget the tickets",
        "thanks for dinner", "good luck today", "i am on my way",
        "the package arrived", "we are out of coffee", "miss you",
        "the car is fixed", "love you", "i will call you later",
        "please feed the cat", "meet me at the front entrance",
        "the game starts soon", "traffic is terrible",
        "can we talk tonight", "i got the job", "bring an umbrella",
        "the door code changed", "are you still coming",
        "save me a seat", "i found your wallet", "the kids are asleep",
        "lunch is on me", "congratulations on the new house",
        "check your email", "i will be home soon", "sorry i missed your call",
        "the rent is paid", "where did you park",
        "can you walk the dog", "the movie was great",
        "let us grab a coffee sometime", "the train is delayed",
        "do you need anything from the store", "feel better soon",
        "text me when you get home", "the meeting is cancelled",
        "we should celebrate", "i booked the flights",
    ],
    "list_name": [
        "shopping", "grocery", "to do", "packing", "christmas",
        "birthday party", "camping", "hardware store", "weekend chores",
        "pharmacy", "work", "wish", "reading", "gift", "back to school",
        "holiday", "garden", "baby shower", "moving day", "errands",
        "party supplies", "weekly", "household", "road trip", "wedding",
    ],
    "item": [
        "milk", "eggs", "bread", "butter", "bananas", "apples",
        "coffee beans", "olive oil", "paper towels", "toilet paper",
        "dish soap", "laundry detergent", "rice", "pasta", "tomatoes",
        "onions", "garlic", "cheddar cheese", "greek yogurt", "orange juice",
        "batteries", "light bulbs", "phone chargers", "sunscreen",
        "toothpaste", "shampoo", "dog food", "cat litter", "birthday candles",
        "wrapping paper", "tent pegs", "flashlights", "hiking socks",
        "rain ponchos", "dishwasher tablets", "coat hangers", "cereal",
        "cherry tomatoes", "chicken breasts", "frozen peas", "peanut butter",
        "strawberry jam",
        "oat milk", "brown sugar", "baking soda", "trash bags",
        "sparkling water", "dark chocolate", "avocados", "lemons",
        "birthday cards", "duct tape", "wood screws", "potting soil",
        "tomato seeds", "sleeping bags", "bug spray", "cough syrup",
        "vitamins", "notebooks", "pencils", "lunch bags", "flour",
        "spinach", "salmon", "tortillas", "maple syrup", "ice cream",
        "sourdough bread", "hand soap", "green tea", "sparkling wine",
    ],
    "cuisine": [
        "italian", "thai", "mexican", "indian", "japanese", "chinese",
        "korean", "vietnamese", "french", "greek", "spanish", "lebanese",
        "ethiopian", "turkish", "moroccan", "peruvian", "brazilian",
        "german", "american", "vegetarian", "vegan", "seafood", "sushi",
        "pizza", "ramen", "tapas", "dim sum", "barbecue", "korean barbecue",
        "middle eastern", "caribbean", "persian", "nepalese", "steak",
        "burger", "georgian", "sri lankan", "cuban", "malaysian",
    ],
}

# ---------------------------------------------------------------------------
# Templates: intent -> list of templates
# ---------------------------------------------------------------------------

TEMPLATES: dict[str, list[str]] = {
    "set_alarm": [
        "set an alarm for {time}",
        "(please |)set an alarm for {time} {date}",
        "wake me up at {time}",
        "wake me up {date} at {time}",
        "(can|could) you wake me (up |)at {time} {date}",
        "set an alarm {date} at {time}",
        "alarm (at|for) {time} (please|)",
        "i need to (wake up|be up|get up) at {time}",
        "(set|create|make) a new alarm for {time}",
        "set an alarm",
        "i need an alarm (please|)",
        "make sure i am up by {time} {date}",
        "set my alarm for {time}",
        "(i need|i want) (an|a new) alarm",
        "(turn on|switch on) (an|my) alarm",
        "set (up |)a (wake up|morning) alarm",
        "can you set (an|my) alarm",
        "(add|put in) an alarm (at|for) {time} {date}",
        "i have to get up early {date} so set an alarm for {time}",
        "set an alarm {date}",
        "get me up at {time} (please|)",
        "alarm {date} {time}",
        "schedule an alarm for {time} {date} (please|)",
        "i want an alarm at {time}",
    ],
    "set_timer": [
        "set a timer for {duration}",
        "(start|begin) a timer for {duration}",
        "timer for {duration}",
        "(please |)set a timer",
        "start a timer",
        "i need a timer for {duration}",
        "put a timer on for {duration}",
        "set the (kitchen |oven |)timer for {duration}",
        "can you time {duration} for me",
        "count down {duration}",
        "start a countdown (of|for) {duration}",
        "alert me in {duration}",
        "time {duration} for the (pasta|eggs|tea|laundry)",
        "countdown {duration}",
        "(start|begin|set up) (a|the) (kitchen |)timer",
        "i need a (quick |)timer",
        "(could|can) you start a timer for {duration}",
        "timer {duration} (please|)",
        "i want a timer (please|)",
        "start counting down from {duration}",
        "ping me after {duration}",
        "run a timer for {duration}",
    ],
    "get_weather": [
        "what is the weather (like |)in {city}",
        "what is the weather (like |){date}",
        "what is the weather (going to be |)(like |)in {city} {date}",
        "will it rain {date}",
        "will it rain in {city} {date}",
        "is it going to (snow|rain|be windy|be sunny) in {city}",
        "how (hot|cold|warm) will it be in {city} {date}",
        "do i need an umbrella {date}",
        "(show me the |)weather forecast for {city}",
        "what is the temperature in {city} at {time} {date}",
        "how cold is it outside",
        "what is the forecast",
        "is it sunny in {city} right now",
        "should i bring a jacket {date}",
        "give me the weather in {city} {date}",
        "what is the weather",
        "(tell me|check) the forecast for {city} {date}",
        "will it be (cold|hot|foggy|stormy) {date} at {time}",
        "is it raining in {city}",
        "how is the weather looking {date}",
        "(what is|how is) the weather (like |)(outside|right now|today)",
        "is it raining (outside|)",
        "do i need an umbrella",
        "(what is|tell me) the temperature (outside|right now)",
        "weather in {city} {date}",
        "do i need sunscreen in {city} {date}",
    ],
    "play_music": [
        "play {song} by {artist}",
        "play (some|a bit of) {artist}",
        "play (the song |){song}",
        "i want to (hear|listen to) {artist}",
        "put on {song}",
        "play something by {artist}",
        "(can|could) you play {artist} (please|)",
        "listen to {song} by {artist}",
        "shuffle songs by {artist}",
        "play (some |)music",
        "play the (latest|new|best) album (by|from) {artist}",
        "queue up {song}",
        "start playing {artist}",
        "i am in the mood for some {artist}",
        "play me a song",
        "turn on some music",
        "(play|put on) (some|a little) music",
        "shuffle (my |)music",
        "i want to listen to (some |)music",
        "put on {song} by {artist} (please|)",
        "play {artist} (on repeat|loud|in the kitchen)",
        "i want to hear {song}",
        "play the track {song}",
        "i would like to hear {song} by {artist}",
        "can you play the song {song}",
        "add {song} to the queue",
        "can you put on some {artist}",
    ],
    "send_message": [
        "text {contact} that {message}",
        "send a message to {contact} saying {message}",
        "tell {contact} (that |){message}",
        "message {contact} saying {message}",
        "send {contact} a text saying {message}",
        "let {contact} know (that |){message}",
        "(can|could) you text {contact}",
        "send a message",
        "send a text to {contact}",
        "shoot {contact} a message saying {message}",
        "write to {contact} that {message}",
        "drop {contact} a line saying {message}",
        "send a text message",
        "(i want to|i need to|help me) (send|write) a (text|message)",
        "compose a (new |)(message|text)",
        "(please |)text {contact} {message}",
        "send {contact} a message",
        "i want to send a message to {contact}",
        "reply to {contact} with {message}",
        "whatsapp {contact} that {message}",
        "send the message {message} to {contact}",
        "message {contact}",
    ],
    "call_contact": [
        "call {contact}",
        "phone {contact}",
        "give {contact} a call",
        "dial {contact}",
        "ring {contact} (please|)",
        "(can|could) you call {contact} (for me|)",
        "start a video call with {contact}",
        "i want to talk to {contact} on the phone",
        "make a (phone |)call",
        "(make|place) a (phone |video |)call",
        "(i want|i need) to make a (phone |)call",
        "get {contact} on the phone",
        "call {contact} (on speaker|back)",
        "place a call to {contact}",
        "i need to call {contact}",
        "please call {contact} (now|right away)",
        "video call {contact}",
        "call (my voicemail|someone)",
        "facetime {contact}",
        "return the call from {contact}",
        "connect me with {contact}",
    ],
    "add_to_list": [
        "add {item} to my {list_name} list",
        "put {item} on the {list_name} list",
        "i need {item} on my {list_name} list",
        "add {item} to (my|the) list",
        "add {item} and {item} to the {list_name} list",
        "(please |)add {item} to the {list_name} list",
        "put {item} on my list",
        "can you add {item} to my {list_name} list",
        "{list_name} list add {item}",
        "remember to (buy|get) {item}",
        "add {item} {item} and {item} to my {list_name} list",
        "add (something|an item) to (my|the) list",
        "(i want|i need) to add something to (my|a) list",
        "add an item to my {list_name} list",
        "(note|jot) down {item} on the {list_name} list",
        "we are out of {item} add it to the {list_name} list",
        "include {item} in my {list_name} list",
        "my {list_name} list needs {item}",
        "put {item} and {item} on my list",
        "add to my {list_name} list {item}",
        "(create|start) a {list_name} list with {item}",
        "i should remember to pick up {item}",
    ],
    "book_restaurant": [
        "book a table for {party_size} at a {cuisine} restaurant {date} at {time}",
        "reserve a table for {party_size} {date}",
        "book a {cuisine} restaurant in {city}",
        "i want to book {cuisine} for {party_size} people {date}",
        "make a reservation at a {cuisine} place for {time}",
        "book dinner for {party_size} at {time}",
        "can you get us a table {date}",
        "we are {party_size} people and want {cuisine} food in {city} {date}",
        "book a restaurant",
        "reserve a {cuisine} restaurant for {party_size} {date} at {time} in {city}",
        "(book|reserve) a table (please|)",
        "(i want|i need) to (book|reserve) a table",
        "make a (dinner |lunch |)reservation",
        "get me a reservation for {party_size} at {time} {date}",
        "book a table at a {cuisine} place",
        "i need a dinner reservation for {party_size} (people |)in {city}",
        "reserve (lunch|dinner) {date} at a {cuisine} restaurant",
        "table for {party_size} at {time} (please|)",
        "make a restaurant reservation {date}",
        "find and book a {cuisine} restaurant in {city} for {party_size}",
        "book us somewhere that serves {cuisine} {date}",
        "can you reserve a spot for {party_size} at a {cuisine} restaurant",
        "reserve a table for a party of {party_size} at {time}",
        "i would like to book a table {date} at {time}",
    ],
}

# Per-intent restrictions on slot values, to avoid odd combinations such as a
# restaurant booking at 4 am or an alarm "this afternoon".
VALUE_FILTERS = {
    ("book_restaurant", "time"):
        lambda v: not ({"am", "morning", "midnight"} & set(v.split())),
    ("set_alarm", "date"):
        lambda v: not ({"afternoon", "evening"} & set(v.split())),
}
# Everyday values a newcomer is likely to try first; never held out of train.
PROTECTED_VALUES = {
    "7 am", "8 am", "7 30 am", "noon", "7 pm", "today", "tomorrow", "tonight",
    "on~monday", "5 minutes", "10 minutes", "an hour", "2", "4", "two", "four",
    "london", "paris", "new york", "tokyo", "mom", "dad", "sarah", "james",
    "milk", "eggs", "bread", "shopping", "grocery", "to do", "italian",
    "thai", "sushi", "adele", "the beatles", "taylor swift", "queen",
    "i am running late", "dinner is ready", "happy birthday",
}
# The first templates of every intent are the canonical phrasings; they are
# never held out of train.
PROTECTED_TEMPLATES = 3
# Templates without slots are down-weighted so that most sentences carry slots.
ZERO_SLOT_WEIGHT = 0.5

TOKEN_RE = re.compile(r"^[a-z0-9]+$")
GROUP_RE = re.compile(r"\(([^()]*)\)")
SLOT_RE = re.compile(r"^\{([a-z_]+)\}$")
VOWELS = "aeiou"

# ---------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------


def split_heldout(rng: random.Random, items: list, fraction: float,
                  protected=()) -> tuple[list, list]:
    """Split ``items`` into (seen, held_out); ``fraction`` of them is held out.

    Items in ``protected`` are never held out. Order of ``seen`` follows
    ``items``; the held-out ones are picked at random.
    """
    candidates = [x for x in items if x not in protected]
    n_held = max(1, round(len(items) * fraction))
    held = set(rng.sample(candidates, n_held))
    return [x for x in items if x not in held], [x for x in items if x in held]


def expand_groups(rng: random.Random, template: str) -> str:
    return GROUP_RE.sub(lambda m: rng.choice(m.group(1).split("|")), template)


def render(rng: random.Random, intent: str, template: str,
           pools: dict[str, tuple[list, list]], p_held_value: float) -> tuple[list[str], list[str], bool]:
    """Render one template. Returns tokens, tags, and whether a held-out value was used."""
    text = expand_groups(rng, template)
    if rng.random() < P_FILLER:
        text = rng.choice(FILLERS) + " " + text
    tokens: list[str] = []
    tags: list[str] = []
    value_starts: set[int] = set()
    used: dict[str, set[str]] = {}
    used_held = False
    for word in text.split():
        m = SLOT_RE.match(word)
        if not m:
            tokens.append(word)
            tags.append("O")
            continue
        slot = m.group(1)
        keep = VALUE_FILTERS.get((intent, slot), lambda v: True)
        seen, held = ([v for v in p if keep(v)] for p in pools[slot])
        taken = used.setdefault(slot, set())
        from_held = rng.random() < p_held_value
        pool = held if from_held else seen
        value = rng.choice(pool)
        while value in taken:  # distinct values for repeated slots
            value = rng.choice(pool)
        taken.add(value)
        used_held |= from_held
        prefix, _, core = value.rpartition("~")
        for p in prefix.split():
            tokens.append(p)
            tags.append("O")
        value_starts.add(len(tokens))
        for i, t in enumerate(core.split()):
            tokens.append(t)
            tags.append(("B-" if i == 0 else "I-") + slot)
    # "a" -> "an" before a slot value starting with a vowel
    for i in value_starts:
        if i > 0 and tokens[i - 1] == "a" and tokens[i][0] in VOWELS:
            tokens[i - 1] = "an"
    return tokens, tags, used_held


def generate(seed: int = SEED) -> dict[str, list[tuple[list[str], list[str], str, dict]]]:
    rng = random.Random(seed)
    pools = {slot: split_heldout(rng, vals, HELDOUT_VALUE_FRACTION, PROTECTED_VALUES)
             for slot, vals in SLOT_VALUES.items()}
    tpl_pools = {intent: split_heldout(rng, tpls, HELDOUT_TEMPLATE_FRACTION,
                                       tpls[:PROTECTED_TEMPLATES])
                 for intent, tpls in TEMPLATES.items()}
    intents = list(TEMPLATES)
    seen_sentences: set[str] = set()
    splits: dict[str, list] = {}
    for split, size in SPLIT_SIZES.items():
        is_train = split == "train"
        # balanced intent schedule: size // n each, remainder spread, shuffled
        schedule = [intents[i % len(intents)] for i in range(size)]
        rng.shuffle(schedule)
        rows = []
        for intent in schedule:
            seen_tpl, held_tpl = tpl_pools[intent]
            for _attempt in range(10_000):
                use_held_tpl = (not is_train) and rng.random() < P_HELDOUT_TEMPLATE
                cands = held_tpl if use_held_tpl else seen_tpl
                weights = [1.0 if "{" in t else ZERO_SLOT_WEIGHT for t in cands]
                tpl = rng.choices(cands, weights)[0]
                tokens, tags, used_held = render(
                    rng, intent, tpl, pools, 0.0 if is_train else P_HELDOUT_VALUE)
                sentence = " ".join(tokens)
                if sentence not in seen_sentences:
                    break
            else:
                raise RuntimeError(f"could not find a new sentence for {intent}")
            seen_sentences.add(sentence)
            rows.append((tokens, tags, intent,
                         {"held_template": use_held_tpl, "held_value": used_held}))
        splits[split] = rows
    return splits


# ---------------------------------------------------------------------------
# Checks and statistics
# ---------------------------------------------------------------------------


def check(splits) -> None:
    errors: list[str] = []
    all_slots = set(SLOT_VALUES)
    all_values = {v for vals in SLOT_VALUES.values() for v in vals}
    for v in sorted(PROTECTED_VALUES - all_values):
        errors.append(f"protected value {v!r} is not a slot value")
    for slot, vals in SLOT_VALUES.items():
        if len(vals) != len(set(vals)):
            errors.append(f"duplicate values in slot {slot!r}")
    for split, rows in splits.items():
        for n, (tokens, tags, intent, _) in enumerate(rows, 1):
            where = f"{split}:{n}"
            if not tokens:
                errors.append(f"{where}: empty sentence")
            if len(tokens) != len(tags):
                errors.append(f"{where}: {len(tokens)} tokens vs {len(tags)} tags")
            for t in tokens:
                if not TOKEN_RE.match(t):
                    errors.append(f"{where}: bad token {t!r}")
            prev = "O"
            for tag in tags:
                if tag != "O":
                    kind, _, slot = tag.partition("-")
                    if kind not in ("B", "I") or slot not in all_slots:
                        errors.append(f"{where}: bad tag {tag!r}")
                    if kind == "I" and prev[2:] != slot:
                        errors.append(f"{where}: {tag} after {prev} (invalid IOB2)")
                prev = tag
            if intent not in TEMPLATES:
                errors.append(f"{where}: unknown intent {intent!r}")
        missing = set(TEMPLATES) - {r[2] for r in rows}
        if missing:
            errors.append(f"{split}: intents missing: {sorted(missing)}")
    train_slots = {t[2:] for r in splits["train"] for t in r[1] if t != "O"}
    if train_slots != all_slots:
        errors.append(f"train: slot types missing: {sorted(all_slots - train_slots)}")
    sents = [" ".join(r[0]) for rows in splits.values() for r in rows]
    if len(sents) != len(set(sents)):
        errors.append("duplicate sentences across/within splits")
    if errors:
        raise SystemExit("dataset check failed:\n  " + "\n  ".join(errors[:50]))


def spans(tags: list[str]) -> list[str]:
    return [t[2:] for t in tags if t.startswith("B-")]


def print_stats(splits) -> None:
    train_vocab = {t for r in splits["train"] for t in r[0]}
    intents = list(TEMPLATES)
    slots = sorted(SLOT_VALUES)
    names = list(splits)
    w = 18

    def row(label, vals):
        print(f"  {label:<{w}}" + "".join(f"{v:>9}" for v in vals))

    print("== quickstart dataset ==")
    print(f"  seed {SEED}; held out: {HELDOUT_VALUE_FRACTION:.0%} of values per slot, "
          f"{HELDOUT_TEMPLATE_FRACTION:.0%} of templates per intent")
    print(f"  templates: {sum(len(v) for v in TEMPLATES.values())}, "
          f"slot values: {sum(len(v) for v in SLOT_VALUES.values())}")
    row("", names)
    row("sentences", [len(splits[s]) for s in names])
    print("  -- intents")
    for it in intents:
        row(it, [sum(r[2] == it for r in splits[s]) for s in names])
    print("  -- slot spans")
    span_counts = {s: Counter(x for r in splits[s] for x in spans(r[1])) for s in names}
    for sl in slots:
        row(sl, [span_counts[s][sl] for s in names])
    print("  -- shape")
    row("0 slots", [sum(len(spans(r[1])) == 0 for r in splits[s]) for s in names])
    row("1-2 slots", [sum(1 <= len(spans(r[1])) <= 2 for r in splits[s]) for s in names])
    row("3+ slots", [sum(len(spans(r[1])) >= 3 for r in splits[s]) for s in names])
    row("multi-word spans", [sum(1 for r in splits[s] for i, t in enumerate(r[1])
                                 if t.startswith("B-") and i + 1 < len(r[1])
                                 and r[1][i + 1].startswith("I-"))
                             for s in names])
    row("avg tokens", [f"{sum(len(r[0]) for r in splits[s]) / len(splits[s]):.1f}"
                       for s in names])
    row("max tokens", [max(len(r[0]) for r in splits[s]) for s in names])
    row("vocab size", [len({t for r in splits[s] for t in r[0]}) for s in names])
    print("  -- generalisation (vs train)")
    row("held-out template", [sum(r[3]["held_template"] for r in splits[s]) for s in names])
    row("held-out value", [sum(r[3]["held_value"] for r in splits[s]) for s in names])
    row("has OOV token", [sum(any(t not in train_vocab for t in r[0]) for r in splits[s])
                          for s in names])


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def file_contents(rows) -> dict[str, str]:
    return {
        "seq.in": "".join(" ".join(r[0]) + "\n" for r in rows),
        "seq.out": "".join(" ".join(r[1]) + "\n" for r in rows),
        "label": "".join(r[2] + "\n" for r in rows),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT,
                    help=f"output directory (default: {DEFAULT_OUT})")
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if the files on disk differ")
    ap.add_argument("--quiet", action="store_true", help="do not print statistics")
    args = ap.parse_args()

    splits = generate(SEED)
    check(splits)
    if not args.quiet:
        print_stats(splits)

    stale = []
    for split, rows in splits.items():
        d = args.out / split
        for name, text in file_contents(rows).items():
            path = d / name
            if args.check:
                if not path.is_file() or path.read_text(encoding="utf-8") != text:
                    stale.append(str(path))
            else:
                d.mkdir(parents=True, exist_ok=True)
                with open(path, "w", encoding="utf-8", newline="\n") as f:
                    f.write(text)
    if args.check:
        if stale:
            print("out of date (rerun generate.py):\n  " + "\n  ".join(stale),
                  file=sys.stderr)
            return 1
        print(f"ok: files under {args.out} are up to date")
    else:
        print(f"wrote {sum(len(r) for r in splits.values())} sentences to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
