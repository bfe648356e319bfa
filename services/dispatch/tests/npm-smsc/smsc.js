// An SMSC outside the dispatch process, on the npm `smpp` package (not this project's code), for
// the dispatch tests (services/dispatch/tests/npm_smsc.rs). It behaves as the SMSCs that exposed
// lost receipts do: every submit_sm is answered with a message id and its DELIVRD receipt
// (deliver_sm) is written right after the submit_sm_resp, in the same tick.
//
// A receipt counts as delivered to the ESME only when its deliver_sm_resp says 0 (ESME_ROK); any
// other answer, or a connection lost before the answer, leaves it pending, and pending receipts are
// sent again on the next bind (and after an error answer, 200 ms later), as an SMSC's store and
// forward does.
//
// Usage: node smsc.js [--listen HOST:PORT] [--ids decimal|hex] [--first-id N] [--receipt-ids same|decimal] [--drop-after N]
//   --listen      where to listen: 127.0.0.1:0 (a free port, the tests' default); the compose file
//                 runs it as the cluster's SMSC on 0.0.0.0:2775 (deploy/smsc-simulator.Dockerfile)
//   --ids         message ids in submit_sm_resp and receipts: decimal (default) or upper-case hex,
//                 counting up from --first-id (default 1)
//   --receipt-ids how receipts write the id: as submit_sm_resp gave it (same, the default) or, for
//                 hex ids, as its decimal value (decimal), as some SMSCs do
//   --drop-after  the SMSC restarts once, at the Nth accepted submit (counted over the whole run):
//                 the answers and receipts of the last 8 submits up to it are held back, then written
//                 all at once (more than a client reads in one go), nothing more is read, and the
//                 connection is closed with unread submits in it (so the peer gets a reset)
//
// Prints one line per event on stdout:
//   listening PORT
//   bound SYSTEM_ID
//   submit ID ESM_CLASS DATA_CODING DESTINATION SHORT_MESSAGE_HEX   (the fields as received, hex bytes)
//   receipt-sent ID
//   receipt-acked ID STATUS          (STATUS: the deliver_sm_resp command_status, decimal)
//   dropped
'use strict';

const smpp = require('smpp');
const defs = require('smpp/lib/defs');

// The raw short_message bytes of each submit_sm, not the package's decoded text: the tests assert
// the bytes (UDH included) dispatch put on the wire.
delete defs.commands.submit_sm.params.short_message.filter;

const args = process.argv.slice(2);
function option(name, fallback) {
  const at = args.indexOf(name);
  return at >= 0 ? args[at + 1] : fallback;
}
const idFormat = option('--ids', 'decimal');
let nextId = Number(option('--first-id', '1'));
const receiptIds = option('--receipt-ids', 'same');
const dropAfter = Number(option('--drop-after', '0'));
let accepted = 0;
let dropped = false;
// Answers held back until the drop: [session, submit_sm, message id].
const held = [];
const HELD_BEFORE_DROP = 8;

// Receipts not yet answered with ESME_ROK: message id -> receipt fields.
const pending = new Map();
const sessions = new Set();

function say(line) {
  process.stdout.write(line + '\n');
}

function receiptText(id) {
  if (receiptIds === 'decimal') {
    id = String(parseInt(id, 16));
  }
  return `id:${id} sub:001 dlvrd:001 submit date:2612020000 done date:2612020001 stat:DELIVRD err:000 text:`;
}

function sendReceipt(session, id) {
  const receipt = pending.get(id);
  if (!receipt || !sessions.has(session)) {
    return;
  }
  const sent = session.send(
    new smpp.PDU('deliver_sm', {
      source_addr_ton: receipt.dest_addr_ton,
      source_addr_npi: receipt.dest_addr_npi,
      source_addr: receipt.destination_addr,
      dest_addr_ton: receipt.source_addr_ton,
      dest_addr_npi: receipt.source_addr_npi,
      destination_addr: receipt.source_addr,
      esm_class: 0x04, // SMSC delivery receipt
      short_message: receiptText(id),
    }),
    (resp) => {
      say(`receipt-acked ${id} ${resp.command_status}`);
      if (resp.command_status === 0) {
        pending.delete(id);
      } else {
        setTimeout(() => sendReceipt(session, id), 200);
      }
    },
  );
  if (sent) {
    say(`receipt-sent ${id}`);
  }
}

const server = smpp.createServer((session) => {
  session.on('error', () => {});
  session.on('close', () => sessions.delete(session));
  session.on('bind_transceiver', (pdu) => {
    if (pdu.system_id !== 'test' || pdu.password !== 'secret') {
      session.send(pdu.response({ command_status: smpp.ESME_RBINDFAIL }));
      session.close();
      return;
    }
    session.send(pdu.response({ system_id: 'npmsmsc' }));
    sessions.add(session);
    say(`bound ${pdu.system_id}`);
    // What the last connection left unanswered comes now.
    for (const id of pending.keys()) {
      sendReceipt(session, id);
    }
  });
  session.on('enquire_link', (pdu) => session.send(pdu.response()));
  session.on('unbind', (pdu) => {
    session.send(pdu.response());
    sessions.delete(session);
    session.close();
  });
  function answer(pdu, id) {
    session.send(pdu.response({ message_id: id }));
    say(
      `submit ${id} ${pdu.esm_class} ${pdu.data_coding} ${pdu.destination_addr} ` +
        Buffer.from(pdu.short_message).toString('hex'),
    );
    if (pdu.registered_delivery & 0x03) {
      pending.set(id, pdu);
      sendReceipt(session, id);
    }
  }
  session.on('submit_sm', (pdu) => {
    const id = idFormat === 'hex' ? nextId.toString(16).toUpperCase() : String(nextId);
    nextId += 1;
    accepted += 1;
    if (dropAfter === 0 || dropped || accepted <= dropAfter - HELD_BEFORE_DROP) {
      answer(pdu, id);
      return;
    }
    held.push([pdu, id]);
    if (accepted >= dropAfter) {
      dropped = true;
      for (const [submit, heldId] of held.splice(0)) {
        answer(submit, heldId);
      }
      // Read nothing more: submits written after this one are never answered (nor taken), and
      // closing with them unread resets the connection.
      session.pause();
      sessions.delete(session);
      session.socket.end(() => session.socket.destroy());
      say('dropped');
    }
  });
});

const listen = option('--listen', '127.0.0.1:0');
const colon = listen.lastIndexOf(':');
server.listen(Number(listen.slice(colon + 1)), listen.slice(0, colon), () => {
  say(`listening ${server.address().port}`);
});
