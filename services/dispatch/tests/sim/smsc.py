"""A tiny SMPP 3.4 SMSC outside the dispatch process, built on the independent `smpp.pdu3`
codec (PyPI), for black-box tests: bind_transceiver, enquire_link, submit_sm (answered with a hex
message id), a DELIVRD receipt (deliver_sm) for every submit that asks for one, unbind.

Usage: python smsc.py  -> prints "listening PORT", then "submit ID DEST HEX-SHORT-MESSAGE" and
"receipt-acked ID" lines on stdout, one per event.
"""
import asyncio
import io
import itertools
import sys

from smpp.pdu import operations as ops
from smpp.pdu import pdu_types as t
from smpp.pdu.pdu_encoding import PDUEncoder

ENCODER = PDUEncoder()
IDS = itertools.count(0x10000)


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def serve(reader, writer):
    seq = itertools.count(1)
    pending = {}

    def send(pdu):
        writer.write(ENCODER.encode(pdu))

    async def receipt(message_id, pdu):
        await asyncio.sleep(0.05)
        text = (
            "id:%s sub:001 dlvrd:001 submit date:2611270000 done date:2611270001 "
            "stat:DELIVRD err:000 text:" % message_id
        )
        number = next(seq)
        pending[number] = message_id
        send(
            ops.DeliverSM(
                seqNum=number,
                source_addr_ton=pdu.params["dest_addr_ton"],
                source_addr_npi=pdu.params["dest_addr_npi"],
                source_addr=pdu.params["destination_addr"],
                dest_addr_ton=pdu.params["source_addr_ton"],
                dest_addr_npi=pdu.params["source_addr_npi"],
                destination_addr=pdu.params["source_addr"],
                esm_class=t.EsmClass(t.EsmClassMode.DEFAULT, t.EsmClassType.SMSC_DELIVERY_RECEIPT),
                protocol_id=0,
                priority_flag=t.PriorityFlag.LEVEL_0,
                registered_delivery=t.RegisteredDelivery(t.RegisteredDeliveryReceipt.NO_SMSC_DELIVERY_RECEIPT_REQUESTED),
                replace_if_present_flag=t.ReplaceIfPresentFlag.DO_NOT_REPLACE,
                data_coding=t.DataCoding(),
                sm_default_msg_id=0,
                short_message=text.encode(),
            )
        )
        await writer.drain()

    try:
        while True:
            head = await reader.readexactly(4)
            length = int.from_bytes(head, "big")
            body = await reader.readexactly(length - 4)
            pdu = ENCODER.decode(io.BytesIO(head + body))
            command = pdu.commandId
            if command == t.CommandId.bind_transceiver:
                send(ops.BindTransceiverResp(seqNum=pdu.seqNum, system_id="pysim"))
                say("bound %s" % pdu.params["system_id"].decode())
            elif command == t.CommandId.enquire_link:
                send(ops.EnquireLinkResp(seqNum=pdu.seqNum))
            elif command == t.CommandId.submit_sm:
                message_id = "%X" % next(IDS)
                send(ops.SubmitSMResp(seqNum=pdu.seqNum, message_id=message_id))
                say(
                    "submit %s %s %s"
                    % (message_id, pdu.params["destination_addr"].decode(), pdu.params["short_message"].hex())
                )
                wanted = pdu.params.get("registered_delivery")
                if wanted is not None and wanted.receipt != t.RegisteredDeliveryReceipt.NO_SMSC_DELIVERY_RECEIPT_REQUESTED:
                    asyncio.ensure_future(receipt(message_id, pdu))
            elif command == t.CommandId.deliver_sm_resp:
                say("receipt-acked %s" % pending.pop(pdu.seqNum, "?"))
            elif command == t.CommandId.unbind:
                send(ops.UnbindResp(seqNum=pdu.seqNum))
                await writer.drain()
                break
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    say("listening %d" % server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
