// Minimal Unity client for an EEICT Stream live stream (docs/protocol.md).
// Needs NativeWebSocket (endel/NativeWebSocket) and MessagePack-CSharp; see README.md.
using System;
using System.Collections.Generic;
using MessagePack;
using NativeWebSocket;
using UnityEngine;

[MessagePackObject]
public class EeictPlayer
{
    [Key("sid")] public ulong Sid;
    [Key("name")] public string Name;
    [Key("team")] public string Team;
    [Key("hp")] public int Hp;
    [Key("x")] public float X;
    [Key("y")] public float Y;
    [Key("z")] public float Z;
    [Key("view_x")] public float Yaw;   // degrees, 0 = +x, counter-clockwise
    [Key("view_y")] public float Pitch;
    [Key("actv_itm")] public string ActiveItem;

    // CS2 is Z-up; Unity is Y-up: swap Y and Z.
    public Vector3 UnityPosition => new Vector3(X, Z, Y);
}

[MessagePackObject]
public class EeictFrame
{
    [Key("tick")] public int Tick;
    [Key("round_time")] public float RoundTime;
    [Key("round_start")] public bool RoundStart;
    [Key("is_freeze")] public bool IsFreeze;
    [Key("t_wins")] public int TWins;
    [Key("ct_wins")] public int CtWins;
    [Key("players")] public List<EeictPlayer> Players;  // alive players only
}

// Server messages: one class with every field the client reads; MessagePack-CSharp skips the rest.
[MessagePackObject]
public class EeictMessage
{
    [Key("type")] public string Type;
    [Key("seq")] public long Seq;
    [Key("frames")] public List<EeictFrame> Frames;      // ticks
    [Key("max_buffer")] public int MaxBuffer;            // hello
    [Key("skipped")] public long? Skipped;               // skip (nil when not countable)
    [Key("reason")] public string Reason;                // skip
    [Key("code")] public string Code;                    // error
    [Key("message")] public string Message;              // error
}

public class EeictStreamClient : MonoBehaviour
{
    public string serverUrl = "ws://127.0.0.1:8080";
    public string stream = "generated";
    public float bufferSeconds = 1f;
    public float rate = 64f;  // frames per second of the stream (hello.stream.rate)

    public EeictFrame Current { get; private set; }  // the frame on screen

    WebSocket socket;
    readonly Queue<EeictFrame> buffer = new Queue<EeictFrame>();
    float accumulator;
    long lastSeq = -1;

    static readonly MessagePackSerializerOptions Options =
        MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    async void Start()
    {
        socket = new WebSocket($"{serverUrl.TrimEnd('/')}/live/{stream}");
        socket.OnMessage += OnMessage;
        socket.OnError += error => Debug.LogWarning($"EEICT: {error}");
        socket.OnClose += code => Debug.Log($"EEICT: closed ({code})");
        await socket.Connect();
    }

    void OnMessage(byte[] data)
    {
        var msg = MessagePackSerializer.Deserialize<EeictMessage>(data, Options);
        switch (msg.Type)
        {
            case "hello":
                var subscribe = new Dictionary<string, object>
                {
                    ["type"] = "subscribe",
                    ["buffer"] = Math.Min(msg.MaxBuffer, (int)(bufferSeconds * rate)),
                };
                if (lastSeq >= 0) subscribe["resume_seq"] = lastSeq + 1;  // after a reconnect
                socket.Send(MessagePackSerializer.Serialize(subscribe));
                break;
            case "ticks":
                foreach (var frame in msg.Frames) buffer.Enqueue(frame);
                lastSeq = msg.Seq + msg.Frames.Count - 1;
                break;
            case "skip":  // moved to the live edge: drop what is queued, the next frames are current
                Debug.Log($"EEICT: skipped {msg.Skipped} frames ({msg.Reason})");
                buffer.Clear();
                break;
            case "end":
                Debug.Log("EEICT: end of stream");
                break;
            case "error":
                Debug.LogWarning($"EEICT error {msg.Code}: {msg.Message}");
                break;
        }
    }

    void Update()
    {
#if !UNITY_WEBGL || UNITY_EDITOR
        socket?.DispatchMessageQueue();  // NativeWebSocket delivers messages on the main thread
#endif
        // Play at the stream's rate: one frame per 1/rate seconds of game time.
        accumulator += Time.deltaTime;
        var step = 1f / rate;
        while (accumulator >= step)
        {
            accumulator -= step;
            if (buffer.Count == 0) { accumulator = 0; break; }  // starved: wait for data
            Current = buffer.Dequeue();
        }
        // Drive your scene from Current here, e.g. Current.Players[i].UnityPosition.
    }

    async void OnApplicationQuit()
    {
        if (socket != null) await socket.Close();
    }
}
