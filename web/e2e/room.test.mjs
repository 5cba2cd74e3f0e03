// The quiz room's state machine (web/demo/room.js and roster.js) without a
// browser: the rules every page applies in stream order, so that all pages
// hold the same room. Run: scripts/test-e2e.sh web/e2e/room.test.mjs
import assert from "node:assert/strict";
import { test } from "node:test";
import { QuizRoom } from "../demo/room.js";

const join = (id, host = false) => ["join", { id, name: id.toUpperCase(), host, nonce: `n-${id}` }];
const question = (by, round, n, reveal = null) => ["question", { by, round, n, total: 2, text: `q${n}`, choices: ["a", "b"], reveal }];
const answer = (player, round, n, choice) => ["answer", { round, n, player, choice }];
const reveal = (n, correct) => ({ n, correct, answer: correct ? "b" : "a" });

function play(...messages) {
  const room = new QuizRoom();
  for (const [type, data] of messages) room.apply(type, data);
  return room;
}

test("one host: the first who asks; a later asker plays and is told who hosts", () => {
  const room = new QuizRoom();
  room.apply(...join("a", true));
  const notes = room.apply(...join("b", true));
  assert.equal(room.host, "a");
  assert.deepEqual(notes.map((n) => n.kind), ["join", "host-taken"]);
  assert.match(notes[1].text, /B asked to host, but A already hosts/);
});

test("the host leaving hands hosting to the most senior player; the last one leaving empties the seat", () => {
  const room = play(join("a", true), join("b"), join("c"));
  const notes = room.apply("leave", { id: "a" });
  assert.equal(room.host, "b");
  assert.deepEqual(notes.map((n) => n.text), ["A left", "B hosts the room now"]);
  room.apply("leave", { id: "b" });
  assert.equal(room.host, "c");
  room.apply("leave", { id: "c" });
  assert.equal(room.host, null);
  assert.deepEqual(room.players, []);
});

test("a room nobody hosts gets a host by claim, and only one", () => {
  const room = play(join("a"), join("b"));
  assert.equal(room.host, null);
  room.apply("host", { id: "b" });
  room.apply("host", { id: "a" });
  assert.equal(room.host, "b");
});

test("game messages count only from the current host", () => {
  const room = play(join("a", true), join("b"), question("b", 1, 1));
  assert.equal(room.phase, "lobby");
  room.apply(...question("a", 1, 1));
  assert.equal(room.question.n, 1);
  room.apply("finish", { by: "b", round: 1, reveal: reveal(1, 1) });
  assert.equal(room.phase, "question");
});

test("scores: a reveal counts once, first answers only, answers to another question are ignored", () => {
  const room = play(
    join("a", true),
    join("b"),
    question("a", 1, 1),
    answer("b", 1, 1, 1),
    answer("b", 1, 1, 0), // second answer: ignored
    answer("a", 1, 2, 1), // not the question on screen
    question("a", 1, 2, reveal(1, 1)),
    question("a", 1, 2, reveal(1, 1)), // a duplicate changes nothing
  );
  assert.deepEqual([...room.scores], [["b", 1]]);
  assert.equal(room.question.n, 2);
});

test("final ranking: best first, ties share a rank, players who left stay in it, later leaves do not change it", () => {
  const room = play(
    join("a", true),
    join("b"),
    join("c"),
    join("d"),
    question("a", 1, 1),
    answer("b", 1, 1, 1),
    answer("c", 1, 1, 1),
    answer("d", 1, 1, 0),
    ["leave", { id: "c" }], // scored, then left before the end
    question("a", 1, 2, reveal(1, 1)),
    answer("b", 1, 2, 1),
    ["finish", { by: "a", round: 1, reveal: reveal(2, 1) }],
    ["leave", { id: "b" }], // the winner leaves after the end
  );
  assert.deepEqual(
    room.final.map(({ name, score, rank }) => [rank, name, score]),
    [
      [1, "B", 2],
      [2, "C", 1],
      [3, "A", 0],
      [3, "D", 0],
    ],
  );
  assert.equal(room.host, "a");
});

test("play again: a new round starts from zero with whoever is there", () => {
  const room = play(
    join("a", true),
    join("b"),
    question("a", 1, 1),
    answer("b", 1, 1, 1),
    ["finish", { by: "a", round: 1, reveal: reveal(1, 1) }],
    ["leave", { id: "b" }],
    join("c"),
    question("a", 2, 1),
  );
  assert.equal(room.round, 2);
  assert.equal(room.phase, "question");
  assert.equal(room.final, null);
  assert.deepEqual([...room.scores], []);
  assert.deepEqual(room.ranking().map((r) => r.name), ["A", "C"]);
  // A stale answer from the first round does not count in the second.
  room.apply(...answer("c", 1, 1, 1));
  assert.equal(room.hasAnswered("c"), false);
});

test("a snapshot restores the same room, and both go on alike", () => {
  const messages = [join("a", true), join("b"), question("a", 1, 1), answer("b", 1, 1, 1)];
  const room = play(...messages);
  const copy = QuizRoom.from(JSON.parse(JSON.stringify(room)));
  assert.deepEqual(copy.toJSON(), room.toJSON());
  for (const target of [room, copy]) {
    target.apply(...join("c"));
    target.apply(...question("a", 1, 2, reveal(1, 1)));
  }
  assert.deepEqual(copy.toJSON(), room.toJSON());
  assert.deepEqual(copy.players.map((p) => p.id), ["a", "b", "c"]);
});
